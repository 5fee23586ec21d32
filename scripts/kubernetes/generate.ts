/**
 * Writes the Kubernetes manifests' copies of files that have their one source
 * elsewhere in the project, because kustomize reads no file outside its folder:
 *
 *   ops/prometheus/alerts.yml     -> deploy/kubernetes/base/monitoring/prometheus-rule.yaml (PrometheusRule shop-alerts)
 *   ops/mariadb/least-privilege.sh -> deploy/kubernetes/overlays/local/mariadb/least-privilege.sh (byte for byte)
 *
 *   npm run kubernetes:generate           # write them
 *   npm run kubernetes:generate -- --check   # exit 1 naming each copy that is out of date
 *
 * Edit the sources, never the copies; test/kubernetes.test.ts fails while a copy differs.
 */
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parse, stringify } from "yaml";

const root = path.resolve(import.meta.dirname, "../..");

/** The PrometheusRule carrying ops/prometheus/alerts.yml's groups unchanged. */
export function prometheusRuleFromAlerts(alertsYaml: string): string {
  const alerts = parse(alertsYaml) as { groups?: unknown[] };
  if (!Array.isArray(alerts?.groups) || alerts.groups.length === 0) throw new Error("ops/prometheus/alerts.yml has no groups");
  const rule = {
    apiVersion: "monitoring.coreos.com/v1",
    kind: "PrometheusRule",
    metadata: { name: "shop-alerts" },
    spec: { groups: alerts.groups },
  };
  return (
    "# GENERATED from ops/prometheus/alerts.yml by scripts/kubernetes/generate.ts: edit that file, then run\n" +
    "# `npm run kubernetes:generate`. The rules' comments (why each threshold) are there.\n" +
    stringify(rule, { lineWidth: 0 })
  );
}

/** Each copy: where it goes and its content from the source. */
export function generatedFiles(): { file: string; content: string }[] {
  const read = (p: string) => readFileSync(path.join(root, p), "utf8");
  return [
    {
      file: "deploy/kubernetes/base/monitoring/prometheus-rule.yaml",
      content: prometheusRuleFromAlerts(read("ops/prometheus/alerts.yml")),
    },
    {
      file: "deploy/kubernetes/overlays/local/mariadb/least-privilege.sh",
      content: read("ops/mariadb/least-privilege.sh"),
    },
  ];
}

/** The copies whose file differs from what the sources give (or is missing). */
export function staleFiles(): string[] {
  return generatedFiles()
    .filter(({ file, content }) => {
      try {
        return readFileSync(path.join(root, file), "utf8") !== content;
      } catch {
        return true;
      }
    })
    .map(({ file }) => file);
}

if (process.argv[1] && path.resolve(process.argv[1]) === import.meta.filename) {
  if (process.argv.includes("--check")) {
    const stale = staleFiles();
    for (const file of stale) console.error(`${file} is out of date: run npm run kubernetes:generate`);
    process.exit(stale.length === 0 ? 0 : 1);
  }
  for (const { file, content } of generatedFiles()) {
    writeFileSync(path.join(root, file), content);
    console.log(`wrote ${file}`);
  }
}
