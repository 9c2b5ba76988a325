// render's edge Worker: serves each site's live version straight from the R2 bucket.
//
// The bucket holds the store's content-addressed layout (render/publish/manifest.py):
//   hosts/<host>.json                         which site holds a host name, and its live
//                                             version there ("live") (render/publish/hosts.py)
//   sites/<owner>/<site>/root.json            the live version (the truth the claim follows)
//   sites/<owner>/<site>/versions/<v>.json    a version's tree: path -> {hash, size, type},
//                                             and where its blobs are packed ("packs", "index")
//   sites/<owner>/<site>/packs/<sha256>.pack  blobs' bytes back to back (render/publish/packs.py)
//   sites/<owner>/<site>/blobs/<sha256>       a blob the index does not name (older versions,
//                                             [store] layout = "loose")
// A page view reads the host claim (cached for ROOT_TTL_SECONDS, in the isolate and in
// the Cache API), the tree of the version it names (cached by version: immutable) and
// one blob (one ranged get of its pack, or its loose key), checked against its sha256
// before it is served: 3 reads cold, 1 warm. Every root switch points the claim at the
// version it made live; a claim without "live" (older publishers, a host being moved away from),
// or naming a version the bucket no longer keeps, sends the Worker to root.json, whose
// base_url must name the host (a claim left behind serves nothing): 4 reads cold.
// Requests with the session cookie (and writes) go to the origin: the
// rule is render/serve/routing.py's, generated into ./routing.js.
//
// Beside the live tree it answers the versioned URL space of render/serve/versioned.py
// (README: "What a visitor sees when a site changes"), with the same bytes as `render serve`:
//   /_render/live.json                        {"version", "parent", "tree"}      no-cache
//   /_v/<version>/<path>                      a kept version's file               immutable
//   /_v/<version>/_render/tree.json           {"version", "parent", "files": {path: hash}}
//   /_v/<version>/_render/delta/<older>.json  sites/<o>/<s>/deltas/<version>/<older>.json, else computed
//   /sw.js                                    the live tree's file (render/assets/sw.js)  no-cache
// A version is kept while versions/<version>.json is in the bucket; one that is not is a
// plain 404 without X-Render-Version. Version ids are checked before any read.

import { routeRequest } from "./routing.js";

const MAX_PATH = 1024; // bytes of the request path, as sent
const MAX_SEGMENT = 255; // bytes of one decoded path segment
const HOST_RE = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;
const HASH_RE = /^[0-9a-f]{64}$/;
const VERSION_RE = /^\d{8}T\d{6}Z-[0-9a-f]{8}$/;
const SITE_RE = /^[a-z0-9][a-z0-9_-]{0,62}\/[a-z0-9][a-z0-9_-]{0,62}$/;
const CACHE_PATH = "/.render-edge-cache/"; // Cache API keys: under the request's own host (zone)
const TREES_KEPT = 8; // parsed trees per isolate (a 10,000-page tree is a few MB)
const POINTERS_KEPT = 1000; // host claims (and roots, for claims without a pointer) per isolate

// The mirror's Cache-Control (ovh/nginx/render-mirror.conf, map $uri $render_cache_control).
const CACHE_RULES = [
  [/\.[0-9a-f]{8,}\.(?:css|js|mjs|woff2?|png|jpe?g|gif|svg|webp|avif)$/i, "public, max-age=31536000, immutable"],
  [/\.(?:css|js|mjs|json|png|jpe?g|gif|svg|webp|avif|ico|woff2?|ttf|otf|pdf|mp4|webm)$/i, "public, max-age=86400"],
  [/^\/(?:robots\.txt|sitemap[^/]*\.xml)$/, "public, max-age=3600"],
];
const DEFAULT_CACHE = "public, max-age=60";
const IMMUTABLE = "public, max-age=31536000, immutable";
const NO_CACHE = "no-cache";
const VERSIONED = "/_v/";
const LIVE_JSON = "/_render/live.json";
const TREE_JSON = "/_render/tree.json";
const DELTA = "/_render/delta/";
const SERVICE_WORKER = "/sw.js";

export function cacheControl(path) {
  for (const [re, value] of CACHE_RULES) if (re.test(path)) return value;
  return DEFAULT_CACHE;
}

// --- per-isolate state ------------------------------------------------------

const pointers = new Map(); // R2 key -> {fetched: ms epoch, value}: host claims and roots, in use order
const trees = new Map(); // "<owner>/<site>@<version>" -> Map(path -> entry), in use order

function keep(map, key, value, limit) {
  map.delete(key);
  map.set(key, value);
  while (map.size > limit) map.delete(map.keys().next().value);
}

// --- request path ----------------------------------------------------------

/** The decoded path, or null when it must be refused (without reading the bucket). */
export function safePath(rawPath) {
  if (rawPath.length > MAX_PATH || !rawPath.startsWith("/")) return null;
  if (/%(?:2f|5c|00)/i.test(rawPath) || rawPath.includes("\\")) return null;
  const segments = rawPath.split("/");
  const out = [];
  for (const raw of segments) {
    let seg;
    try {
      seg = decodeURIComponent(raw);
    } catch {
      return null;
    }
    // eslint-disable-next-line no-control-regex
    if (seg === "." || seg === ".." || /[\u0000-\u001f\u007f]/.test(seg)) return null;
    if (new TextEncoder().encode(seg).length > MAX_SEGMENT) return null;
    out.push(seg);
  }
  return out.join("/");
}

/** The path as the runtime gives it: still percent-encoded (the runtime folds `.` and `..` segments). */
function rawPathOf(request) {
  const match = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*([^?#]*)/i.exec(request.url);
  return match ? match[1] || "/" : "/";
}

// --- store reads -----------------------------------------------------------

/** A store key inside the bucket: under STORE_PREFIX (render.toml's [store] prefix) when set. */
function prefixed(env, key) {
  const prefix = (env.STORE_PREFIX ?? "").replace(/^\/+|\/+$/g, "");
  return prefix ? `${prefix}/${key}` : key;
}

function seconds(value, fallback) {
  const n = Number(value ?? fallback);
  return (Number.isFinite(n) && n >= 0 ? n : fallback) * 1000;
}

/** How long a pointer may be served from cache: ROOT_TTL_SECONDS for root.json and for a
 * claim that names the live version; HOST_TTL_SECONDS for a claim that names none (a
 * host without a site, or one checked against root.json: they change hands rarely). */
function ttlMs(env, key, value) {
  const root = seconds(env.ROOT_TTL_SECONDS, 5);
  if (key.endsWith("/root.json") || livePointer(value) !== null) return root;
  return Math.max(root, seconds(env.HOST_TTL_SECONDS, 60));
}

async function cacheApi() {
  try {
    return typeof caches !== "undefined" ? await caches.open("render-edge") : null;
  } catch {
    return null;
  }
}

/** A small JSON pointer (a host claim, a root) no older than the TTL; null when absent. */
async function readPointer(env, ctx, host, name) {
  const key = prefixed(env, name);
  const now = Date.now();
  const held = pointers.get(key);
  if (held && now - held.fetched < ttlMs(env, name, held.value)) return held.value;
  const cache = await cacheApi();
  const cacheKey = `https://${host}${CACHE_PATH}${key}`;
  if (cache) {
    const hit = await cache.match(cacheKey);
    if (hit) {
      const fetched = Number(hit.headers.get("x-render-fetched"));
      const value = await hit.json();
      // never go back to a copy older than the one this isolate had (no flapping between versions)
      if (now - fetched < ttlMs(env, name, value) && (!held || fetched > held.fetched)) {
        keep(pointers, key, { fetched, value }, POINTERS_KEPT);
        return value;
      }
    }
  }
  const object = await env.BUCKET.get(key);
  let value = null;
  if (object !== null) {
    try {
      value = await object.json();
    } catch {
      throw new StoreError(`${key} in the bucket is not JSON`);
    }
  }
  keep(pointers, key, { fetched: now, value }, POINTERS_KEPT);
  const ttl = ttlMs(env, name, value);
  if (cache && ttl > 0) {
    const copy = new Response(JSON.stringify(value), {
      headers: {
        "content-type": "application/json",
        "cache-control": `max-age=${Math.max(1, Math.ceil(ttl / 1000))}`,
        "x-render-fetched": String(now),
      },
    });
    ctx.waitUntil(cache.put(cacheKey, copy).catch(() => {}));
  }
  return value;
}

/** A version's tree as {files: Map(path -> entry), parent, packed: Map(blob hash -> {pack,
 * offset})}, parsed once per isolate and version. With `optional`, null when the bucket
 * does not hold it (a version not kept), else a missing tree is a StoreError. */
async function readTree(env, ctx, host, site, version, optional = false) {
  const id = `${site}@${version}`;
  const held = trees.get(id);
  if (held) {
    trees.delete(id);
    trees.set(id, held);
    return held;
  }
  const key = prefixed(env, `sites/${site}/versions/${version}.json`);
  const cache = await cacheApi();
  let data = null;
  const cacheKey = `https://${host}${CACHE_PATH}${key}`;
  const hit = cache ? await cache.match(cacheKey) : null;
  if (hit) {
    data = await hit.json();
  } else {
    const object = await env.BUCKET.get(key);
    if (object === null) {
      if (optional) return null;
      throw new StoreError(`${key} is missing from the bucket`);
    }
    const text = await object.text();
    try {
      data = JSON.parse(text);
    } catch {
      throw new StoreError(`${key} in the bucket is not JSON`);
    }
    if (cache) {
      const copy = new Response(text, {
        headers: { "content-type": "application/json", "cache-control": "max-age=31536000, immutable" },
      });
      ctx.waitUntil(cache.put(cacheKey, copy).catch(() => {}));
    }
  }
  if (
    !data ||
    data.version !== version ||
    typeof data.files !== "object" ||
    data.files === null ||
    (data.parent != null && typeof data.parent !== "string")
  ) {
    throw new StoreError(`${key} in the bucket is not a version tree`);
  }
  const files = new Map();
  for (const [path, entry] of Object.entries(data.files)) {
    if (!entry || !HASH_RE.test(entry.hash) || !Number.isInteger(entry.size) || typeof entry.type !== "string") {
      throw new StoreError(`${key}: files[${JSON.stringify(path)}] is not {hash, size, type}`);
    }
    files.set(path, entry);
  }
  const tree = { files, parent: data.parent ?? null, packed: packIndex(data, key) };
  keep(trees, id, tree, TREES_KEPT);
  return tree;
}

/** A version file's "packs" and "index" as Map(blob hash -> {pack, offset}): empty for a
 * loose version (a blob the index does not name is its loose key). */
function packIndex(data, key) {
  const packs = data.packs ?? [];
  const index = data.index ?? {};
  if (!Array.isArray(packs) || !packs.every((id) => HASH_RE.test(id))) {
    throw new StoreError(`${key}: "packs" is not a list of sha256 hex digests`);
  }
  if (typeof index !== "object" || index === null || Array.isArray(index)) {
    throw new StoreError(`${key}: "index" is not an object`);
  }
  const packed = new Map();
  for (const [hash, at] of Object.entries(index)) {
    const [pack, offset] = Array.isArray(at) && at.length === 2 ? at : [];
    if (!Number.isInteger(pack) || pack < 0 || pack >= packs.length || !Number.isInteger(offset) || offset < 0) {
      throw new StoreError(`${key}: index[${JSON.stringify(hash)}] is not [pack, offset]`);
    }
    packed.set(hash, { pack: packs[pack], offset });
  }
  return packed;
}

/** One blob's bytes as {bytes}, or {problem} when the bucket lacks them or they do not hash
 * to the blob (a truncated or corrupted pack): such bytes are never served. A packed blob is
 * one ranged get of its pack, any other its loose key. */
async function readBlob(env, site, tree, entry) {
  const at = tree.packed.get(entry.hash);
  const key = prefixed(env, at ? `sites/${site}/packs/${at.pack}.pack` : `sites/${site}/blobs/${entry.hash}`);
  let bytes = new ArrayBuffer(0); // the empty blob needs no read (R2 refuses an empty range)
  if (entry.size > 0 && at) {
    bytes = await readRange(env, key, at.offset, entry.size);
  } else if (entry.size > 0) {
    const object = await env.BUCKET.get(key);
    bytes = object === null ? null : await object.arrayBuffer();
  }
  if (bytes === null) return { problem: `blob ${entry.hash} is missing from the bucket` };
  if (bytes.byteLength !== entry.size || (await sha256(bytes)) !== entry.hash) {
    const where = at ? `${key} at offset ${at.offset}` : key;
    const why =
      bytes.byteLength !== entry.size
        ? `${bytes.byteLength} of its ${entry.size} bytes are there`
        : "the bytes there do not hash to it";
    const problem = `blob ${entry.hash} is corrupt in ${where}: ${why}`;
    console.error(`render-edge: ${problem}`);
    return { problem };
  }
  return { bytes };
}

/** `length` bytes of `key` from `offset` (fewer when the object is shorter); null when missing. */
async function readRange(env, key, offset, length) {
  try {
    const object = await env.BUCKET.get(key, { range: { offset, length } });
    return object === null ? null : await object.arrayBuffer();
  } catch (err) {
    // R2 refuses a range that starts past the object's end: a pack cut short, not R2 failing
    const held = await env.BUCKET.head(key);
    if (held === null) return null;
    if (held.size >= offset + length) throw err;
    return new ArrayBuffer(0);
  }
}

async function sha256(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A version other than the live one, or null when the bucket no longer keeps it. Its tree
 * may still be cached (isolate, Cache API) after gc removed it, so one HEAD checks first. */
async function keptTree(env, ctx, host, site, version) {
  const held = await env.BUCKET.head(prefixed(env, `sites/${site}/versions/${version}.json`));
  if (held === null) {
    trees.delete(`${site}@${version}`);
    return null;
  }
  return readTree(env, ctx, host, site, version, true);
}

class StoreError extends Error {}

/** A claim's pointer to the live version ({version, files_hash}), or null when it names none. */
function livePointer(claim) {
  const live = claim && typeof claim === "object" ? claim.live : null;
  if (!live || typeof live !== "object" || typeof live.version !== "string") return null;
  return VERSION_RE.test(live.version) ? live : null;
}

/** The site holding `host` and its live version ({site, version, tree, pointed}), or null
 * when the host serves no site. `pointed`: the version is the claim's, not root.json's. */
async function liveSite(env, ctx, host) {
  const claim = await readPointer(env, ctx, host, `hosts/${host}.json`);
  if (!claim || claim.host !== host || typeof claim.site !== "string" || !SITE_RE.test(claim.site)) return null;
  const live = livePointer(claim);
  if (live !== null) {
    const tree = typeof live.files_hash === "string" ? live.files_hash : "";
    return { site: claim.site, version: live.version, tree, pointed: true };
  }
  return rootSite(env, ctx, host, claim.site);
}

/** `site`'s live version by its root.json, or null when its base_url is not at `host`. */
async function rootSite(env, ctx, host, site) {
  const root = await readPointer(env, ctx, host, `sites/${site}/root.json`);
  if (!root || typeof root.version !== "string" || !VERSION_RE.test(root.version)) return null;
  // a claim left behind by a site whose live version moved to another host serves nothing
  let rootHost = null;
  try {
    rootHost = new URL(root.base_url).hostname.toLowerCase();
  } catch {
    return null;
  }
  if (rootHost !== host) return null;
  const tree = typeof root.files_hash === "string" ? root.files_hash : "";
  return { site, version: root.version, tree, pointed: false };
}

// --- responses --------------------------------------------------------------

function isFileUrl(path) {
  return path.slice(path.lastIndexOf("/") + 1).includes(".");
}

function etagOf(entry) {
  return `"${entry.hash}"`;
}

function matches(ifNoneMatch, etag) {
  if (!ifNoneMatch) return false;
  return ifNoneMatch.split(",").some((tag) => {
    const t = tag.trim();
    return t === "*" || t === etag || t === `W/${etag}`;
  });
}

function plain(status, text, extra = {}) {
  return new Response(text, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", ...extra },
  });
}

/** JSON as Python's json.dumps writes it (ensure_ascii): the same bytes as `render serve`. */
function pyJson(value) {
  return JSON.stringify(value).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** Python's sort order of str (by code point), not JavaScript's (by UTF-16 unit). */
function byCodePoint(a, b) {
  const x = Array.from(a, (c) => c.codePointAt(0));
  const y = Array.from(b, (c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/** render/publish/manifest.py's Delta.between(...).to_bytes(): the paths whose hash changed. */
function deltaDocument(old, kept, version, older) {
  const added = {};
  const changed = {};
  for (const name of [...kept.files.keys()].sort(byCodePoint)) {
    const was = old.files.get(name);
    if (!was) added[name] = kept.files.get(name).hash;
    else if (was.hash !== kept.files.get(name).hash) changed[name] = kept.files.get(name).hash;
  }
  const removed = [...old.files.keys()].filter((name) => !kept.files.has(name)).sort(byCodePoint);
  return pyJson({ version, from: older, from_parent: old.parent, added, changed, removed });
}

function json(request, body, cache, version) {
  const bytes = new TextEncoder().encode(body);
  return new Response(request.method === "HEAD" ? null : bytes, {
    headers: {
      "content-type": "application/json",
      "content-length": String(bytes.length),
      "cache-control": cache,
      "x-render-version": version,
      "x-content-type-options": "nosniff",
    },
  });
}

function notKept(version) {
  return plain(404, `version ${version} is not kept here\n`, { "cache-control": NO_CACHE });
}

async function serveFromBucket(request, env, ctx, host, path) {
  let live = await liveSite(env, ctx, host);
  if (live === null) return plain(404, "no site is published at this host name\n");
  let current = await readTree(env, ctx, host, live.site, live.version, live.pointed);
  if (current === null) {
    // the claim names a version the bucket no longer keeps (gc'd after a crash left it
    // behind): root.json decides, as for a claim without a pointer
    live = await rootSite(env, ctx, host, live.site);
    if (live === null) return plain(404, "no site is published at this host name\n");
    current = await readTree(env, ctx, host, live.site, live.version);
  }
  if (path === LIVE_JSON) {
    const body = `{"version": ${pyJson(live.version)}, "parent": ${pyJson(current.parent)}, "tree": ${pyJson(live.tree)}}`;
    return json(request, body, NO_CACHE, live.version);
  }
  if (path === SERVICE_WORKER) return serveFile(request, env, live.site, live.version, current, path, NO_CACHE);
  if (!path.startsWith(VERSIONED)) return serveFile(request, env, live.site, live.version, current, path);

  const rest = path.slice(VERSIONED.length);
  const slash = rest.indexOf("/");
  const version = slash < 0 ? rest : rest.slice(0, slash);
  const inner = slash < 0 ? "/" : rest.slice(slash);
  if (!VERSION_RE.test(version)) return notKept(version);
  const kept = version === live.version ? current : await keptTree(env, ctx, host, live.site, version);
  if (kept === null) return notKept(version);
  if (inner === TREE_JSON) {
    const files = {};
    for (const name of [...kept.files.keys()].sort(byCodePoint)) files[name] = kept.files.get(name).hash;
    return json(request, pyJson({ version, parent: kept.parent, files }), IMMUTABLE, version);
  }
  if (inner.startsWith(DELTA) && inner.endsWith(".json")) {
    const older = inner.slice(DELTA.length, -".json".length);
    if (VERSION_RE.test(older)) {
      const object = await env.BUCKET.get(prefixed(env, `sites/${live.site}/deltas/${version}/${older}.json`));
      if (object !== null) return json(request, await object.text(), IMMUTABLE, version);
      // no publish wrote it (older is not the parent): computed from the two trees, as render serve does
      const old = older === live.version ? current : await keptTree(env, ctx, host, live.site, older);
      if (old !== null) return json(request, deltaDocument(old, kept, version, older), IMMUTABLE, version);
    }
  }
  return serveFile(request, env, live.site, version, kept, inner, (status) =>
    status === 200 || status === 206 || status === 304 ? IMMUTABLE : NO_CACHE,
  );
}

/** One file of a tree (or its 404 page, or the slash redirect); `cache` overrides the
 * mirror's Cache-Control: a value, or a function of the status. */
async function serveFile(request, env, site, version, tree, path, cache = null) {
  const files = tree.files;
  const url = new URL(request.url);
  const head = request.method === "HEAD";
  const common = { "x-render-version": version, "x-content-type-options": "nosniff" };
  const cacheFor = (status, cachePath) =>
    cache === null ? cacheControl(cachePath) : typeof cache === "function" ? cache(status) : cache;

  const rel = path.replace(/^\/+/, "");
  let status = 200;
  let entry = files.get(rel === "" || rel.endsWith("/") ? `${rel}index.html` : rel);
  let cachePath = path;
  if (!entry) {
    if (rel && !rel.endsWith("/") && !isFileUrl(path) && files.has(`${rel}/index.html`)) {
      return new Response(null, {
        status: 301,
        headers: { ...common, location: `${url.pathname}/${url.search}`, "cache-control": cacheFor(301, path) },
      });
    }
    status = 404;
    cachePath = "/404.html";
    entry = files.get("404.html");
    if (!entry) {
      return new Response(head ? null : "<!doctype html><title>Not found</title><h1>Not found</h1>\n", {
        status: 404,
        headers: { ...common, "content-type": "text/html; charset=utf-8", "cache-control": cacheFor(404, cachePath) },
      });
    }
  }
  const etag = etagOf(entry);
  const headers = {
    ...common,
    "content-type": entry.type,
    etag,
    "cache-control": cacheFor(status, cachePath),
    "accept-ranges": "bytes",
  };
  if (status === 200 && matches(request.headers.get("if-none-match"), etag)) {
    return new Response(null, { status: 304, headers });
  }
  const range = status === 200 ? byteRange(request, etag, entry.size) : null;
  if (range === "unsatisfiable") {
    return new Response(null, { status: 416, headers: { ...headers, "content-range": `bytes */${entry.size}` } });
  }
  if (range) {
    headers["content-range"] = `bytes ${range.offset}-${range.offset + range.length - 1}/${entry.size}`;
    status = 206;
  }
  const length = range ? range.length : entry.size;
  if (head) {
    return new Response(null, { status, headers: { ...headers, "content-length": String(length) } });
  }
  // the whole blob, even for a byte range: only the whole can be checked against its hash
  const { bytes, problem } = await readBlob(env, site, tree, entry);
  if (problem) return plain(502, `${problem}\n`, common);
  const body = range ? new Uint8Array(bytes, range.offset, range.length) : bytes;
  return new Response(body, { status, headers: { ...headers, "content-length": String(length) } });
}

/** A single byte range asked for (`Range: bytes=a-b`, `a-`, `-n`); null for the whole file. */
export function byteRange(request, etag, size) {
  const header = request.headers.get("range");
  if (!header) return null;
  const ifRange = request.headers.get("if-range");
  if (ifRange && ifRange.trim() !== etag) return null; // changed since: the whole new file
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === "" && match[2] === "")) return null; // several ranges, or none: the whole file
  let start;
  let end;
  if (match[1] === "") {
    const suffix = Number(match[2]);
    if (suffix === 0) return "unsatisfiable";
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(match[1]);
    end = match[2] === "" ? size - 1 : Math.min(Number(match[2]), size - 1);
    if (end < start && match[2] !== "") return null; // invalid: ignored, as RFC 9110 says
  }
  if (start >= size) return "unsatisfiable";
  return { offset: start, length: end - start + 1 };
}

async function toOrigin(request, env) {
  const url = new URL(request.url);
  if (!env.ORIGIN) return fetch(request); // on a zone route: the zone's own origin
  const origin = new URL(env.ORIGIN);
  const target = new URL(url.pathname + url.search, origin);
  const headers = new Headers(request.headers);
  headers.set("x-forwarded-host", url.host);
  headers.set("x-forwarded-proto", url.protocol.replace(":", ""));
  const init = { method: request.method, headers, redirect: "manual" };
  if (request.method !== "GET" && request.method !== "HEAD") init.body = request.body;
  let response;
  try {
    response = await fetch(target.toString(), init);
  } catch (err) {
    console.error(`render-edge: origin ${origin.host}: ${err?.message ?? err}`);
    return plain(502, "the origin cannot be reached just now\n", { "x-render-served": "origin" });
  }
  const out = new Response(response.body, response);
  out.headers.set("x-render-served", "origin");
  return out;
}

export default {
  async fetch(request, env, ctx) {
    const target = routeRequest(
      request.method,
      request.headers.get("user-agent"),
      request.headers.get("cookie"),
      env.SESSION_COOKIE,
    );
    if (target === "app") return toOrigin(request, env);
    if (request.method !== "GET" && request.method !== "HEAD") return plain(405, "method not allowed\n");
    const path = safePath(rawPathOf(request));
    if (path === null) return plain(400, "bad request path\n");
    const host = new URL(request.url).hostname.toLowerCase();
    if (!HOST_RE.test(host)) return plain(404, "no site is published at this host name\n");
    try {
      const response = await serveFromBucket(request, env, ctx, host, path);
      response.headers.set("x-render-served", "r2");
      return response;
    } catch (err) {
      // a corrupt pointer or tree, or R2 failing just now: this site answers 503, nothing is cached
      const problem = err instanceof StoreError ? err.message : "the bucket cannot be read just now";
      if (!(err instanceof StoreError)) console.error(`render-edge: ${host}: ${err?.stack ?? err}`);
      return plain(503, `${host} is unavailable: ${problem}\n`, { "retry-after": "5" });
    }
  },
};
