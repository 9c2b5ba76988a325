// Generated from render/serve/routing.py by render.edge.routing: do not edit.
// The front proxy's decision (render.serve.routing.route_request), for the edge Worker:
//   1. not GET/HEAD                 -> "app"    (the bucket is read-only)
//   2. a known crawler User-Agent   -> "mirror" (served from R2)
//   3. a non-empty session cookie   -> "app"    (a logged-in person: the origin)
//   4. anyone else (logged out)     -> "mirror"

export const SESSION_COOKIE = "session";
export const READ_METHODS = ["GET", "HEAD"];
export const CRAWLER_TOKENS = [
  "googlebot",
  "google-inspectiontool",
  "storebot-google",
  "adsbot-google",
  "mediapartners-google",
  "bingbot",
  "bingpreview",
  "msnbot",
  "duckduckbot",
  "yandexbot",
  "baiduspider",
  "slurp",
  "applebot",
  "petalbot",
  "seznambot",
  "qwantify",
  "sogou",
  "facebookexternalhit",
  "facebot",
  "twitterbot",
  "linkedinbot",
  "slackbot",
  "discordbot",
  "telegrambot",
  "whatsapp",
  "pinterestbot",
  "redditbot",
  "embedly",
  "ia_archiver",
  "archive.org_bot",
  "gptbot",
  "oai-searchbot",
  "chatgpt-user",
  "claudebot",
  "perplexitybot",
  "ccbot",
  "amazonbot",
  "bytespider",
  "ahrefsbot",
  "semrushbot",
];

export function isCrawler(userAgent) {
  if (!userAgent) return false;
  const agent = userAgent.toLowerCase();
  return CRAWLER_TOKENS.some((token) => agent.includes(token));
}

/** The value of cookie `name` in a Cookie header, or "" (the first one, as Python's cookie jar reads it). */
export function cookieValue(header, name) {
  if (!header) return "";
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim().replace(/^"(.*)"$/, "$1");
  }
  return "";
}

export function routeRequest(method, userAgent, cookieHeader, cookieName = SESSION_COOKIE) {
  if (!READ_METHODS.includes(String(method).toUpperCase())) return "app";
  if (isCrawler(userAgent)) return "mirror";
  if (cookieValue(cookieHeader, cookieName || SESSION_COOKIE)) return "app";
  return "mirror";
}
