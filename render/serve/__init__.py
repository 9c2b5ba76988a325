"""The serving side: which site a request is for and which version it sees."""
