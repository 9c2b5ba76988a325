// The test harness's entry: the real Worker, with the R2 binding wrapped to count
// every operation it makes (the count is read at /__ops on the harness host name):
// `get <key>`, `get <key> bytes=<first>-<last>` for a ranged get, `head <key>`, ...
import worker from "../src/worker.js";

const HARNESS_HOST = "render-edge-harness.invalid";
let ops = [];

function counted(bucket) {
  return new Proxy(bucket, {
    get(target, name) {
      const value = target[name];
      if (typeof value !== "function") return value;
      return (...args) => {
        const range = args[1]?.range;
        const bytes = range ? ` bytes=${range.offset}-${range.offset + range.length - 1}` : "";
        ops.push(`${String(name)} ${typeof args[0] === "string" ? args[0] : ""}${bytes}`.trim());
        return value.apply(target, args);
      };
    },
  });
}

export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    if (url.hostname === HARNESS_HOST) {
      const body = JSON.stringify({ ops });
      if (url.searchParams.has("reset")) ops = [];
      return new Response(body, { headers: { "content-type": "application/json" } });
    }
    return worker.fetch(request, { ...env, BUCKET: counted(env.BUCKET) }, ctx);
  },
};
