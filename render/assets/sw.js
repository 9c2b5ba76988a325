/* render service worker: keeps each visit (session) of the site on one version.

   A session lasts while at least one window of the site is open: a navigation
   that finds another window of the site (the page it replaces, or another tab)
   stays on the session's version; one that finds none starts a new session on
   the live version (/_render/live.json, asked at most once every LIVE_MS).
   Every same-origin GET is answered from /_v/<version>/..., from this worker's
   cache when it holds the file. Moving to a newer version keeps each cached
   file the deltas say did not change (never fetched again) and drops the rest.
   A collected version (404 under /_v/) moves the session to the live version:
   a navigation loads it, a page that asked for a file is told to reload once.
   See README, "What a visitor sees when a site changes". */
const LIVE = "/_render/live.json";
const LIVE_MS = 3000; // live.json is asked at most this often
const CHAIN = 8; // deltas chained before the whole trees are compared instead (README: bench)
const META = "render-meta"; // the session
const FILES = "render-files"; // responses, under their /_v/<version>/ URL
const GONE = Symbol("gone");
const HEADER = "X-Render-Version";

let session = null; // {version}; kept in META too, since the worker may be stopped
let live = null;
let liveAt = -1e12;
let asking = null;

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", event => event.waitUntil(load().then(s => s || start(false))));

self.addEventListener("message", event => {
  const type = (event.data || {}).type;
  if (type === "render:update") {
    event.waitUntil(start(true).then(() => event.ports[0] && event.ports[0].postMessage("ok")));
  } else if (type === "render:hello" && event.source) {
    event.waitUntil(Promise.all([load(), liveDoc(false)]).then(([s, now]) => event.source.postMessage(
      { type: "render:version", version: now ? now.version : null, pinned: s ? s.version : null })));
  }
});

self.addEventListener("fetch", event => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== location.origin) return;
  const path = url.pathname;
  if (path === "/sw.js" || path === LIVE || path.startsWith("/_v/") || path.startsWith("/_dashboard/")) return;
  event.respondWith(answer(event, url));
});

async function answer(event, url) {
  const navigation = event.request.mode === "navigate";
  let current = navigation ? await forNavigation(event.resultingClientId) : await load();
  if (!current) return fetch(event.request); // no version known yet: the plain site
  let response = await fromVersion(current.version, url);
  if (response !== GONE) return response;
  current = await start(true);
  if (!navigation) {
    const client = await self.clients.get(event.clientId);
    if (client) client.postMessage({ type: "render:reload" });
    return Response.error();
  }
  response = current ? await fromVersion(current.version, url) : GONE;
  return response === GONE ? fetch(event.request) : response;
}

async function forNavigation(resultingId) {
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const current = await load();
  if (!current || !windows.some(c => c.id !== resultingId)) return start(false);
  const now = await liveDoc(false);
  if (now && now.version !== current.version) {
    const kept = await fetch(`/_v/${current.version}/_render/tree.json`, { method: "HEAD", cache: "no-store" });
    if (kept.status === 404) return start(true);
  }
  return current;
}

async function load() {
  if (session) return session;
  const stored = await (await caches.open(META)).match("/_render/session");
  session = stored ? await stored.json() : null;
  return session;
}

async function save(value) {
  session = value;
  await (await caches.open(META)).put("/_render/session", new Response(JSON.stringify(value)));
}

function liveDoc(force) {
  if (!force && live && Date.now() - liveAt < LIVE_MS) return Promise.resolve(live);
  if (!asking) {
    asking = fetch(LIVE, { cache: "no-store" })
      .then(r => (r.ok ? r.json() : null))
      .then(doc => { if (doc) { live = doc; liveAt = Date.now(); } return live; })
      .catch(() => live) // offline: keep what is known
      .finally(() => { asking = null; });
  }
  return asking;
}

/* A new session on the live version; the old version's files move along or go. */
async function start(force) {
  const old = await load();
  const now = await liveDoc(force);
  if (!now) return old;
  if (old && old.version === now.version) return old;
  await save({ version: now.version });
  if (old) await carry(old.version, now);
  return session;
}

/* Keep each cached file of ``from`` that did not change on the way to ``to`` (under to's
   name); drop every other entry of ``from``: no client uses that version any more. */
async function carry(from, to) {
  const files = await caches.open(FILES);
  const keys = (await files.keys()).filter(r => new URL(r.url).pathname.startsWith(`/_v/${from}/`));
  if (!keys.length) return;
  const changed = await changedBetween(from, to);
  for (const request of keys) {
    const url = new URL(request.url);
    const rest = url.pathname.slice(`/_v/${from}`.length);
    if (changed && !changed.has(treePath(rest))) {
      const response = await files.match(request);
      if (response) await files.put(`/_v/${to.version}${rest}${url.search}`, response);
    }
    await files.delete(request);
  }
}

/* The tree paths that differ from ``from`` to ``to``: a chain of at most CHAIN deltas, else
   the two whole trees; null when neither can be had (nothing is carried). */
async function changedBetween(from, to) {
  const changed = new Set();
  let version = to.version, older = to.parent;
  for (let step = 0; older && step < CHAIN; step++) {
    const r = await fetch(`/_v/${version}/_render/delta/${older}.json`);
    if (!r.ok) break;
    const delta = await r.json();
    for (const p of [...Object.keys(delta.added), ...Object.keys(delta.changed), ...delta.removed]) changed.add(p);
    if (older === from) return changed;
    [version, older] = [older, delta.from_parent];
  }
  const [a, b] = await Promise.all([from, to.version].map(v => fetch(`/_v/${v}/_render/tree.json`)
    .then(r => (r.ok ? r.json() : null)).catch(() => null)));
  if (!a || !b) return null;
  const all = new Set([...Object.keys(a.files), ...Object.keys(b.files)]);
  return new Set([...all].filter(p => a.files[p] !== b.files[p]));
}

function treePath(path) {
  let rel;
  try { rel = decodeURIComponent(path).slice(1); } catch (e) { rel = path.slice(1); }
  return rel === "" || rel.endsWith("/") ? rel + "index.html" : rel;
}

async function fromVersion(version, url) {
  const files = await caches.open(FILES);
  const key = `/_v/${version}${url.pathname}${url.search}`;
  const hit = await files.match(key);
  if (hit) return stamped(hit, version);
  let r;
  try {
    r = await fetch(key);
  } catch (e) {
    return Response.error();
  }
  if (r.status === 404 && r.headers.get(HEADER) !== version) return GONE; // the version was collected
  if (r.redirected) { // a folder's URL without its slash: send the page to the public URL
    const to = new URL(r.url);
    return Response.redirect(to.pathname.slice(`/_v/${version}`.length) + to.search, 301);
  }
  if (r.status === 200) await files.put(key, r.clone());
  return stamped(r, version);
}

/* A page's answer: marked with its version, and not cached by the browser under the public
   URL (the /_v/ original is immutable; the public URL changes with each version). */
function stamped(response, version) {
  const headers = new Headers(response.headers);
  headers.set(HEADER, version);
  headers.set("Cache-Control", "no-cache");
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}
