'use strict';
// Medians of the JSON reports bench/run-all.sh wrote: node bench/summarize.js DIR
// Prints Markdown tables, one per measurement, with ratios to the reference
// targets measured in the same run.

const fs = require('fs');
const path = require('path');

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node bench/summarize.js RESULTS_DIR');
  process.exit(2);
}

const metrics = {
  capacity: { label: 'capacity, deliveries/s (p99 <= 50 ms, no loss)', value: (r) => r.capacity_deliveries_per_sec || 0, digits: 0 },
  fanout50k: { label: 'p99 latency at 50,000 deliveries/s, ms', value: (r) => (r.lost > 0 ? Infinity : r.latency.p99_ms), digits: 3 },
  idle: { label: 'idle resident memory per connection, bytes', value: (r) => r.bytes_per_connection, digits: 0 },
  connect: { label: 'connection setup, connections/s', value: (r) => r.connections_per_sec, digits: 0 },
};
const ratios = {
  capacity: [['chat-gateway', 'node-gateway'], ['chat-service', 'minimal']],
  connect: [['chat-gateway', 'node-gateway']],
};

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

const results = {};
const rounds = {};
for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
  const match = /^([a-z0-9]+)-(.+)-(\d+)\.json$/.exec(file);
  if (!match) continue;
  const [, experiment, target, round] = match;
  const metric = metrics[experiment];
  if (!metric) continue;
  const value = metric.value(JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')));
  ((results[experiment] ||= {})[target] ||= []).push(value);
  ((rounds[experiment] ||= {})[target] ||= {})[round] = value;
}

for (const [experiment, byTarget] of Object.entries(results)) {
  const metric = metrics[experiment];
  const show = (v) => (Number.isFinite(v) ? v.toLocaleString('en-US', { maximumFractionDigits: metric.digits }) : 'loss');
  console.log(`\n### ${metric.label}\n`);
  console.log('| target | median | runs |');
  console.log('| --- | ---: | --- |');
  for (const [target, values] of Object.entries(byTarget)) {
    console.log(`| ${target} | ${show(median(values))} | ${values.map(show).join(', ')} |`);
  }
  for (const [ours, reference] of ratios[experiment] || []) {
    const a = rounds[experiment][ours];
    const b = rounds[experiment][reference];
    if (!a || !b) continue;
    // Ratios are taken within each round (same machine state), then the median.
    const perRound = Object.keys(a).filter((r) => r in b && b[r] > 0).map((r) => a[r] / b[r]);
    if (perRound.length) {
      const text = perRound.map((x) => x.toFixed(2)).join(', ');
      console.log(`\n${ours} / ${reference}: median ${median(perRound).toFixed(2)} (per round: ${text})`);
    }
  }
}
