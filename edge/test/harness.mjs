// Runs the edge Worker in workerd through Miniflare on 127.0.0.1, with an R2
// bucket loaded from a local store folder (render's store layout) through
// Miniflare's own R2 API. Used by tests/test_edge*.py and bench/.
//
//   node edge/test/harness.mjs --store DIR [--port 0] [--origin URL] [--ttl SECONDS]
//                              [--persist DIR] [--cookie NAME]
//
// Prints `ready <url>` once serving. Then reads commands, one per line, on stdin:
//   sync     upload objects new or changed in the store folder, delete removed ones -> `synced <n>`
//   reload   a fresh isolate (the Worker's in-memory caches empty)            -> `reloaded`
// and stops when stdin closes.
import { Miniflare } from "miniflare";
import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
if (!args.store) {
  console.error("harness: --store DIR is required");
  process.exit(2);
}
const storeRoot = path.resolve(args.store);

const bindings = { ROOT_TTL_SECONDS: args.ttl ?? "5" };
if (args.origin) bindings.ORIGIN = args.origin;
if (args["host-ttl"]) bindings.HOST_TTL_SECONDS = args["host-ttl"];
if (args.cookie) bindings.SESSION_COOKIE = args.cookie;

const options = {
  modules: true,
  modulesRoot: path.resolve(here, ".."),
  modulesRules: [{ type: "ESModule", include: ["**/*.js"] }],
  scriptPath: path.join(here, "entry.js"),
  compatibilityDate: "2025-07-01",
  r2Buckets: ["BUCKET"],
  r2Persist: args.persist ? path.resolve(args.persist) : false,
  cache: true,
  bindings,
  host: "127.0.0.1",
  port: Number(args.port ?? "0"),
};

const mf = new Miniflare(options);
const url = await mf.ready;
let bucket = await mf.getR2Bucket("BUCKET"); // again after each reload: old stubs are dead

async function* walk(folder, prefix = "") {
  let entries;
  try {
    entries = await readdir(folder, { withFileTypes: true });
  } catch (err) {
    if (err.code === "ENOENT") return;
    throw err;
  }
  for (const entry of entries) {
    if (entry.name.startsWith(".")) continue; // temporary files of atomic writes, locks
    const full = path.join(folder, entry.name);
    const key = prefix + entry.name;
    if (entry.isDirectory()) yield* walk(full, `${key}/`);
    else if (entry.isFile()) yield [key, full];
  }
}

const seen = new Map(); // key -> "mtime size" as last uploaded

async function sync() {
  let count = 0;
  const present = new Set();
  for await (const [key, full] of walk(storeRoot)) {
    present.add(key);
    const info = await stat(full);
    const mark = `${info.mtimeMs} ${info.size}`;
    if (seen.get(key) === mark) continue;
    const contentType = key.endsWith(".json") ? "application/json" : "application/octet-stream";
    const data = await readFile(full); // a Buffer: the proxy takes a plain ArrayBuffer
    const bytes = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
    await bucket.put(key, bytes, { httpMetadata: { contentType } });
    seen.set(key, mark);
    count += 1;
  }
  for (const key of [...seen.keys()]) {
    if (!present.has(key)) {
      await bucket.delete(key);
      seen.delete(key);
      count += 1;
    }
  }
  return count;
}

await sync();
console.log(`ready ${url.toString().replace(/\/$/, "")}`);

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const command = line.trim();
  try {
    if (command === "sync") console.log(`synced ${await sync()}`);
    else if (command === "reload") {
      await mf.setOptions(options);
      await mf.ready;
      bucket = await mf.getR2Bucket("BUCKET");
      console.log("reloaded");
    } else if (command) console.log(`error unknown command ${command}`);
  } catch (err) {
    console.log(`error ${String(err?.message ?? err).replace(/\n/g, " ")}`);
  }
}
await mf.dispose();
