"""The build stage: snapshot -> plan -> render processes -> the content-addressed tree."""
