// Lighthouse driver for render: one long-lived Node process that audits pages
// in a Chromium that is already running (its remote-debugging port).
//
// Protocol, one JSON object per line.
//   argv: node lighthouse-driver.mjs <lighthouse package dir>
//   stdin:  {"id": 1, "url": "...", "port": 9222, "form_factor": "mobile", "html": "/path/report.html"}
//   stdout: {"id": 1, "scores": {...}, "metrics": {...}, "error": null, "version": "12.8.2"}
// Nothing else is ever written to stdout; Lighthouse's own log goes to stderr.

import {createInterface} from 'node:readline';
import {writeFileSync} from 'node:fs';
import {pathToFileURL} from 'node:url';
import {join} from 'node:path';

const root = process.argv[2];
const lh = await import(pathToFileURL(join(root, 'core', 'index.js')).href);
const lighthouse = lh.default;

const CATEGORIES = ['performance', 'accessibility', 'best-practices', 'seo'];
const METRICS = {
  lcp: 'largest-contentful-paint',
  cls: 'cumulative-layout-shift',
  tbt: 'total-blocking-time',
  fcp: 'first-contentful-paint',
  speed_index: 'speed-index',
};

async function audit(job) {
  const flags = {
    port: job.port,
    hostname: '127.0.0.1',
    output: ['html'],
    logLevel: 'error',
    onlyCategories: CATEGORIES,
    // Not scored, about 1.3 s of each run: the full-page screenshot and the bf-cache test.
    disableFullPageScreenshot: true,
    skipAudits: ['bf-cache'],
  };
  const config = job.form_factor === 'desktop' ? lh.desktopConfig : undefined;
  const result = await lighthouse(job.url, flags, config);
  if (!result) throw new Error('Lighthouse returned no result');
  const lhr = result.lhr;
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
