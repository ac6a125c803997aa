// Validate the Prometheus Operator objects and every PromQL expression offline (run by scripts/check_deploy.sh
// with node and the npm packages @kubernetes-models/prometheus-operator, whose validators carry the operator's
// CRD schemas, and @prometheus-io/lezer-promql, Prometheus' own PromQL grammar).
//   node validate_monitoring.mjs crds.json deploy/grafana/rationad.json
// crds.json: [{source, doc}] written by validate_k8s.py. Exit 1 on any invalid object or expression.
import { readFileSync } from 'node:fs';
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor';
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import { parser } from '@prometheus-io/lezer-promql';

const kinds = { PodMonitor, PrometheusRule, ServiceMonitor };
let failures = 0;
const fail = (msg) => { console.log(`FAIL ${msg}`); failures += 1; };

function promqlError(expr) {
  // Grafana's $__rate_interval and $variables are not PromQL: substitute before parsing.
  const q = expr.replace(/\$__\w+/g, '5m').replace(/\$\{?\w+\}?/g, 'x');
  let at = null;
  parser.parse(q).iterate({ enter: (n) => { if (n.type.isError && at === null) at = n.from; } });
  return at === null ? null : `syntax error at ${at}: ${q.slice(Math.max(0, at - 20), at)}<HERE>${q.slice(at, at + 20)}`;
}

// The grammar check itself must work, or every expression would pass.
if (promqlError('sum(rate(x[5m])') === null || promqlError('sum by (le) (rate(x_bucket[5m]))') !== null) {
  console.log('FAIL self-test: the PromQL parser does not tell valid from invalid');
  process.exit(1);
}

const [crdFile, dashboardFile] = process.argv.slice(2);
const crds = JSON.parse(readFileSync(crdFile, 'utf8'));
let exprs = 0;
for (const { source, doc } of crds) {
  const Kind = kinds[doc.kind];
  const where = `${source}: ${doc.kind}/${doc.metadata?.name}`;
  if (!Kind) { fail(`${where}: no validator for ${doc.apiVersion} ${doc.kind}`); continue; }
  try { new Kind(doc).validate(); } catch (e) { fail(`${where}: ${e.message}`); }
  if (doc.kind === 'PrometheusRule') {
    for (const g of doc.spec.groups) {
      for (const r of g.rules) {
        exprs += 1;
        const err = promqlError(String(r.expr));
        if (err) fail(`${where} rule ${r.alert ?? r.record}: ${err}`);
      }
    }
  }
}
const dash = JSON.parse(readFileSync(dashboardFile, 'utf8'));
const walk = (panels) => {
  for (const p of panels ?? []) {
    for (const t of p.targets ?? []) {
      if (!t.expr) continue;
      exprs += 1;
      const err = promqlError(t.expr);
      if (err) fail(`${dashboardFile}: panel "${p.title}": ${err}`);
    }
    walk(p.panels);
  }
};
walk(dash.panels);
console.log(`${crds.length} monitoring.coreos.com objects checked against the operator's CRD schemas; ` +
            `${exprs} PromQL expressions parsed`);
process.exit(failures ? 1 : 0);
