// Lighthouse driver for render: one long-lived Node process that audits pages
// in a Chromium that is already running (its remote-debugging port).
//
// Protocol, one JSON object per line.
//   argv: node lighthouse-driver.mjs <lighthouse package dir>
//   stdin:  {"id": 1, "url": "...", "port": 9222, "form_factor": "mobile", "settle_ms": 250,
//            "html": "/path/report.html"}
//   stdout: {"id": 1, "event": "traced"}  when the page load is recorded (the trace has ended)
//           {"id": 1, "scores": {...}, "metrics": {...}, "error": null, "version": "12.8.2"}
// Nothing else is ever written to stdout; Lighthouse's own log goes to stderr. The "traced"
// line may be missing when Lighthouse fails early; the result line always comes last.

import {createInterface} from 'node:readline';
import {writeFileSync} from 'node:fs';
import {createRequire} from 'node:module';
import {pathToFileURL} from 'node:url';
import {join, resolve} from 'node:path';

const root = resolve(process.argv[2]);
const lh = await import(pathToFileURL(join(root, 'core', 'index.js')).href);
const lighthouse = lh.default;
const {pageFunctions} = await import(pathToFileURL(join(root, 'core', 'lib', 'page-functions.js')).href);
// The logger Lighthouse itself imports: its status events say when the trace is over.
const loggerPath = createRequire(join(root, 'core', 'index.js')).resolve('lighthouse-logger');
const log = (await import(pathToFileURL(loggerPath).href)).default;

const CATEGORIES = ['performance', 'accessibility', 'best-practices', 'seo'];
const METRICS = {
  lcp: 'largest-contentful-paint',
  cls: 'cumulative-layout-shift',
  tbt: 'total-blocking-time',
  fcp: 'first-contentful-paint',
  speed_index: 'speed-index',
};

function flagsFor(job) {
  return {
    port: job.port,
    hostname: '127.0.0.1',
    output: ['html'],
    logLevel: 'error',
    onlyCategories: CATEGORIES,
    // Not scored, about 1.3 s of each run: the full-page screenshot and the bf-cache test.
    disableFullPageScreenshot: true,
    skipAudits: ['bf-cache'],
    // How long the page must have been quiet before the trace ends (Lighthouse waits 1000 ms for
    // each). Simulated throttling computes the metrics from the recorded requests and tasks, not
    // from wall time, so the waits only have to outlast the page's activity; on loopback that
    // ends within milliseconds. Lighthouse itself only raises them for observed throttling.
    pauseAfterFcpMs: job.settle_ms,
    pauseAfterLoadMs: job.settle_ms,
    networkQuietThresholdMs: job.settle_ms,
    cpuQuietThresholdMs: job.settle_ms,
  };
}

async function audit(job) {
  const flags = flagsFor(job);
  const config = job.form_factor === 'desktop' ? lh.desktopConfig : undefined;
  // Artifacts are collected once the page load is recorded: from then on other work in the
  // browser no longer shows in the trace the scores come from.
  let traced = false;
  const onStatus = ([, message]) => {
    if (traced || !String(message).startsWith('Getting artifact')) return;
    traced = true;
    process.stdout.write(JSON.stringify({id: job.id, event: 'traced'}) + '\n');
  };
  log.events.on('status', onStatus);
  let result;
  try {
    result = await lighthouse(job.url, flags, config);
  } finally {
    log.events.off('status', onStatus);
  }
  if (!result) throw new Error('Lighthouse returned no result');
  const lhr = result.lhr;
  keepBenchmark(lhr.environment?.benchmarkIndex);
  if (job.html) writeFileSync(job.html, result.report[0] ?? result.report);
  const scores = {};
  for (const name of CATEGORIES) scores[name] = lhr.categories[name]?.score ?? null;
  const metrics = {};
  for (const [key, id] of Object.entries(METRICS)) {
    const value = lhr.audits[id]?.numericValue;
    metrics[key] = typeof value === 'number' ? value : null;
  }
  const error = lhr.runtimeError ? `${lhr.runtimeError.code}: ${lhr.runtimeError.message}` : null;
  return {scores, metrics, error, version: lhr.lighthouseVersion, warnings: lhr.runWarnings ?? []};
}

// Lighthouse times a second of JavaScript in the page on every run to rate the host's CPU
// (BenchmarkIndex). The figure feeds no score: it is shown in the report's environment and,
// on the CLI only, warns of a slow host. Busy for a second per page on a 2-core machine, it also
// slows the other audit running beside it. The first run of this process measures it; later
// runs report that measurement.
function keepBenchmark(index) {
  if (typeof index !== 'number' || !Number.isFinite(index)) return;
  if (pageFunctions.computeBenchmarkIndex.measured !== undefined) return;
  const measured = new Function(`return ${index};`);  // evaluated in the page: no closure
  measured.measured = index;
  pageFunctions.computeBenchmarkIndex = measured;
}

// The first run resolves Lighthouse's config from cold (its modules, the messages of every
// audit): about half a second more than later runs. Do it now, while the browser starts.
const {initializeConfig} = await import(pathToFileURL(join(root, 'core', 'config', 'config.js')).href);
await initializeConfig('navigation', undefined, flagsFor({settle_ms: 1000}));

const lines = createInterface({input: process.stdin, crlfDelay: Infinity});
for await (const line of lines) {
  if (!line.trim()) continue;
  const job = JSON.parse(line);
  let reply;
  try {
    reply = {id: job.id, ...(await audit(job))};
  } catch (err) {
    reply = {id: job.id, scores: null, metrics: null, error: String(err?.stack ?? err)};
  }
  process.stdout.write(JSON.stringify(reply) + '\n');
}
// Input closed: done. Lighthouse leaves timers behind that would keep Node alive for seconds.
process.exit(0);
