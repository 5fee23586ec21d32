import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { parse, parseAllDocuments, stringify } from "yaml";
import * as monitoringV1 from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import * as appsV1 from "kubernetes-models/apps/v1";
import * as autoscalingV2 from "kubernetes-models/autoscaling/v2";
import * as batchV1 from "kubernetes-models/batch/v1";
import * as networkingV1 from "kubernetes-models/networking.k8s.io/v1";
import * as policyV1 from "kubernetes-models/policy/v1";
import * as coreV1 from "kubernetes-models/v1";
import { staleFiles } from "../scripts/kubernetes/generate.js";

/**
 * deploy/kubernetes, offline: every overlay renders with `kubectl kustomize`,
 * every rendered object is valid against the Kubernetes (and Prometheus
 * Operator) schemas of kubernetes-models, and the rendered objects keep the
 * deployment's rules: probes, limits, a locked-down security context, drains
 * shorter than the grace period, a CronJob that cannot overlap, no Secret with
 * a value, the NetworkPolicies, and settings the code really reads.
 */

const root = path.resolve(import.meta.dirname, "..");
const deployDir = path.join(root, "deploy/kubernetes");
/**
 * What is rendered and checked: each overlay, and production with the component
 * that moves the relays into the service pods (as docs/deploy.md says to use it:
 * an overlay of one's own on top of production).
 */
const variants: Array<{ name: string; overlay: "local" | "production"; components: string[]; inProcessRelays: boolean }> = [
  { name: "overlays/local", overlay: "local", components: [], inProcessRelays: false },
  { name: "overlays/production", overlay: "production", components: [], inProcessRelays: false },
  { name: "overlays/production + components/in-process-relays", overlay: "production", components: ["in-process-relays"], inProcessRelays: true },
];
const projectImage = "ghcr.io/shop/shop-exactly-once";

// Loose shapes of the rendered objects: the schema check below is what types them.
/* eslint-disable @typescript-eslint/no-explicit-any */
type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> }; spec?: any };

/** The kinds the manifests may hold, each with the model that validates it; any other kind fails the test. */
const models: Record<string, Record<string, new (data: any) => { validate(): void }>> = {
  v1: {
    Namespace: coreV1.Namespace,
    Service: coreV1.Service,
    ConfigMap: coreV1.ConfigMap,
    Secret: coreV1.Secret,
    PersistentVolumeClaim: coreV1.PersistentVolumeClaim,
  },
  "apps/v1": { Deployment: appsV1.Deployment, StatefulSet: appsV1.StatefulSet },
  "batch/v1": { Job: batchV1.Job, CronJob: batchV1.CronJob },
  "policy/v1": { PodDisruptionBudget: policyV1.PodDisruptionBudget },
  "autoscaling/v2": { HorizontalPodAutoscaler: autoscalingV2.HorizontalPodAutoscaler },
  "networking.k8s.io/v1": { NetworkPolicy: networkingV1.NetworkPolicy },
  "monitoring.coreos.com/v1": { PrometheusRule: monitoringV1.PrometheusRule, ServiceMonitor: monitoringV1.ServiceMonitor },
};

function kubectlAvailable(): boolean {
  return spawnSync("kubectl", ["version", "--client"], { stdio: "ignore" }).status === 0;
}

function render(overlay: string, components: string[]): K8sObject[] {
  let dir = path.join(deployDir, "overlays", overlay);
  let scratch: string | undefined;
  if (components.length > 0) {
    // An overlay of one's own: the overlay plus the components (kustomize wants relative paths).
    scratch = mkdtempSync(path.join(tmpdir(), "shop-kustomize-"));
    const rel = (p: string) => path.relative(scratch!, p);
    writeFileSync(
      path.join(scratch, "kustomization.yaml"),
      stringify({
        apiVersion: "kustomize.config.k8s.io/v1beta1",
        kind: "Kustomization",
        resources: [rel(dir)],
        components: components.map((c) => rel(path.join(deployDir, "components", c))),
      }),
    );
    dir = scratch;
  }
  let out;
  try {
    out = spawnSync("kubectl", ["kustomize", dir], { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  } finally {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }
  const name = [`overlays/${overlay}`, ...components.map((c) => `components/${c}`)].join(" + ");
  if (out.status !== 0) throw new Error(`kubectl kustomize ${name} failed:\n${out.stderr}`);
  return parseAllDocuments(out.stdout)
    .map((d) => {
      if (d.errors.length > 0) throw new Error(`${name} renders YAML that does not parse: ${d.errors[0]!.message}`);
      return d.toJS() as K8sObject | null;
    })
    .filter((o): o is K8sObject => o !== null);
}

const id = (o: K8sObject) => `${o.kind}/${o.metadata.name}`;

/** The pod spec of a workload, with whether its containers are exempt from probes (they run to completion). */
function podSpec(o: K8sObject): { spec: any; runsToCompletion: boolean; labels: Record<string, string> } | undefined {
  switch (o.kind) {
    case "Deployment":
    case "StatefulSet":
      return { spec: o.spec.template.spec, runsToCompletion: false, labels: o.spec.template.metadata?.labels ?? {} };
    case "Job":
      return { spec: o.spec.template.spec, runsToCompletion: true, labels: o.spec.template.metadata?.labels ?? {} };
    case "CronJob":
      return { spec: o.spec.jobTemplate.spec.template.spec, runsToCompletion: true, labels: o.spec.jobTemplate.spec.template.metadata?.labels ?? {} };
    default:
      return undefined;
  }
}

function containersOf(spec: any): any[] {
  return [...(spec.initContainers ?? []), ...(spec.containers ?? [])];
}

function workloads(objects: K8sObject[]) {
  return objects.flatMap((o) => {
    const pod = podSpec(o);
    return pod ? [{ object: o, ...pod }] : [];
  });
}

/** Does a label selector (matchLabels and matchExpressions with In / NotIn / Exists) select these labels? */
function selects(selector: any, labels: Record<string, string>): boolean {
  if (!selector) return false;
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    if (e.operator === "In" && !(has && e.values.includes(labels[e.key]))) return false;
    if (e.operator === "NotIn" && has && e.values.includes(labels[e.key])) return false;
    if (e.operator === "Exists" && !has) return false;
    if (e.operator === "DoesNotExist" && has) return false;
  }
  return true;
}

/** Every .ts file under a folder (generated code left out: it reads no settings). */
function tsFiles(dir: string): string[] {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  return entries.flatMap((name) => {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) return name === "gen" || name === "node_modules" ? [] : tsFiles(p);
    return p.endsWith(".ts") ? [p] : [];
  });
}

/**
 * The setting names the source of one workspace (and the shared packages) can
 * read: upper-case string literals and process.env.X, plus names made from a
 * template (`${prefix}_RELAY_METRICS_PORT`, `${name}_FILE`) whose head is one
 * of those literals (or again such a name).
 */
function settingsReader(workspace: string): (name: string) => boolean {
  const packages = readdirSync(path.join(root, "packages")).map((p) => path.join(root, "packages", p, "src"));
  const text = [path.join(root, workspace, "src"), ...packages].flatMap(tsFiles).map((f) => readFileSync(f, "utf8")).join("\n");
  const literals = new Set<string>();
  for (const m of text.matchAll(/["'`]([A-Z][A-Z0-9_]*)["'`]/g)) literals.add(m[1]!);
  for (const m of text.matchAll(/\benv\.([A-Z][A-Z0-9_]*)\b/g)) literals.add(m[1]!);
  const tails = new Set<string>();
  for (const m of text.matchAll(/\$\{[^}`]*\}([A-Z0-9_]+)`/g)) tails.add(m[1]!);
  const reads = (name: string, depth = 0): boolean =>
    literals.has(name) || (depth < 3 && [...tails].some((t) => name.length > t.length && name.endsWith(t) && reads(name.slice(0, -t.length), depth + 1)));
  return (name) => reads(name);
}

/** The deployment guide: every Secret the manifests reference must be made there. */
const deployDoc = (() => {
  try {
    return readFileSync(path.join(root, "docs/deploy.md"), "utf8");
  } catch {
    return "";
  }
})();

/** The `kubectl create secret` command of docs/deploy.md that makes `name` (continuation lines joined), if any. */
function createSecretCommand(name: string): string | undefined {
  const joined = deployDoc.replace(/\\\n\s*/g, " ");
  return joined.split("\n").find((line) => new RegExp(`kubectl\\b.*\\bcreate secret (generic|tls) ${name}(\\s|$)`).test(line));
}

/** The default of a numeric option in the platform's source, e.g. exitOnSignals' forceAfterMs. */
function sourceDefaultMs(file: string, pattern: RegExp): number {
  const m = pattern.exec(readFileSync(path.join(root, file), "utf8"));
  if (!m) throw new Error(`${file}: ${pattern} not found; the drain arithmetic in deploy/kubernetes names it`);
  return Number(m[1]!.replace(/_/g, ""));
}

describe("Kubernetes manifests' generated copies", () => {
  // Needs no kubectl: the files themselves.
  it("keeps the PrometheusRule (from ops/prometheus/alerts.yml) and least-privilege.sh in sync with their sources", () => {
    expect(staleFiles(), "run npm run kubernetes:generate").to.deep.equal([]);
  });
});

describe("Kubernetes manifests: what the test renders", () => {
  it("renders every overlay and uses every component", () => {
    const overlaysFound = readdirSync(path.join(deployDir, "overlays")).sort();
    expect([...new Set(variants.map((v) => v.overlay))].sort()).to.deep.equal(overlaysFound);
    const componentsFound = readdirSync(path.join(deployDir, "components")).sort();
    expect([...new Set(variants.flatMap((v) => v.components))].sort()).to.deep.equal(componentsFound);
  });
});

describe("Kubernetes manifests (deploy/kubernetes)", function () {
  // kubectl kustomize and the schema validators take a few seconds for both overlays.
  this.timeout(120_000);

  const rendered = new Map<string, K8sObject[]>();
  before(function () {
    if (!kubectlAvailable()) {
      if (process.env.CI === "true") throw new Error("kubectl is not installed: CI must render the manifests (kubectl kustomize)");
      console.log("      (skipped: kubectl is not installed; `kubectl kustomize` renders the overlays offline)");
      this.skip();
    }
    for (const v of variants) rendered.set(v.name, render(v.overlay, v.components));
  });

  for (const variant of variants) {
    describe(variant.name, () => {
      const objects = () => rendered.get(variant.name)!;
      const byKind = (kind: string) => objects().filter((o) => o.kind === kind);
      const find = (kind: string, name: string) => {
        const o = objects().find((x) => x.kind === kind && x.metadata.name === name);
        if (!o) throw new Error(`${kind}/${name} is not rendered`);
        return o;
      };

      it("renders objects of known kinds only, each valid against its Kubernetes schema", () => {
        expect(objects().length).to.be.greaterThan(40);
        const problems: string[] = [];
        for (const o of objects()) {
          const Model = models[o.apiVersion]?.[o.kind];
          if (!Model) {
            problems.push(`${id(o)}: ${o.apiVersion} ${o.kind} is not a kind this test knows how to validate`);
            continue;
          }
          try {
            new Model(o).validate();
          } catch (err) {
            problems.push(`${id(o)}: ${(err as Error).message}`);
          }
          if (o.kind !== "Namespace") expect((o.metadata as any).namespace, `${id(o)} namespace`).to.equal("shop");
        }
        expect(problems).to.deep.equal([]);
        expect(byKind("Namespace").map((n) => n.metadata.name)).to.deep.equal(["shop"]);
      });

      it("gives every container probes (but Jobs' and CronJobs'), requests and limits, and a non-root read-only security context", () => {
        const problems: string[] = [];
        for (const { object, spec, runsToCompletion } of workloads(objects())) {
          const podSc = spec.securityContext ?? {};
          if (spec.automountServiceAccountToken !== false) problems.push(`${id(object)}: mounts a service account token it does not use`);
          for (const c of containersOf(spec)) {
            const where = `${id(object)} container ${c.name}`;
            const sc = c.securityContext ?? {};
            if (!runsToCompletion && !spec.initContainers?.includes(c)) {
              if (!c.readinessProbe) problems.push(`${where}: no readinessProbe`);
              if (!c.livenessProbe) problems.push(`${where}: no livenessProbe`);
            }
            for (const kind of ["requests", "limits"]) {
              for (const r of ["cpu", "memory"]) if (!c.resources?.[kind]?.[r]) problems.push(`${where}: no ${kind}.${r}`);
            }
            if ((sc.runAsNonRoot ?? podSc.runAsNonRoot) !== true) problems.push(`${where}: runAsNonRoot is not true`);
            if (!((sc.runAsUser ?? podSc.runAsUser) > 0)) problems.push(`${where}: no non-root runAsUser`);
            if (sc.readOnlyRootFilesystem !== true) problems.push(`${where}: readOnlyRootFilesystem is not true`);
            if (sc.allowPrivilegeEscalation !== false) problems.push(`${where}: allowPrivilegeEscalation is not false`);
            if (!sc.capabilities?.drop?.includes("ALL")) problems.push(`${where}: capabilities are not all dropped`);
            if ((sc.seccompProfile ?? podSc.seccompProfile)?.type !== "RuntimeDefault") problems.push(`${where}: seccomp profile is not RuntimeDefault`);
            // A read-only root needs somewhere to write temporary files.
            const tmp = (c.volumeMounts ?? []).find((m: any) => m.mountPath === "/tmp");
            const tmpVolume = spec.volumes?.find((v: any) => v.name === tmp?.name);
            if (!tmpVolume?.emptyDir) problems.push(`${where}: no emptyDir at /tmp`);
          }
        }
        expect(problems).to.deep.equal([]);
      });

      it("runs the project's image as its node user (uid 1000) with the entry point of each process, and pins every image's tag", () => {
        const problems: string[] = [];
        for (const { object, spec } of workloads(objects())) {
          for (const c of containersOf(spec)) {
            const where = `${id(object)} container ${c.name}`;
            const [, repo, tag] = /^(.+?)(?::([^:/@]+))?(?:@sha256:[0-9a-f]{64})?$/.exec(c.image) ?? [];
            if (!/@sha256:/.test(c.image) && (!tag || tag === "latest")) problems.push(`${where}: image ${c.image} is not pinned to a tag`);
            if (repo !== projectImage) continue;
            if ((c.securityContext?.runAsUser ?? spec.securityContext?.runAsUser) !== 1000) problems.push(`${where}: not the image's node user (1000)`);
            const entry = c.args?.[0] as string | undefined;
            if (c.command !== undefined) problems.push(`${where}: overrides the image's ENTRYPOINT ["node"]`);
            if (!entry || !/^[a-z-]+\/dist\/[a-z-]+\.js$/.test(entry)) {
              problems.push(`${where}: args ${JSON.stringify(c.args)} do not name a compiled entry (<workspace>/dist/<name>.js)`);
              continue;
            }
            // The build compiles <workspace>/src/<name>.ts to dist/<name>.js.
            const source = entry.replace("/dist/", "/src/").replace(/\.js$/, ".ts");
            try {
              statSync(path.join(root, source));
            } catch {
              problems.push(`${where}: ${entry} has no source ${source}`);
            }
          }
        }
        expect(problems).to.deep.equal([]);
      });

      it("sets only settings the code reads (a misspelt name fails here)", () => {
        const readers = new Map<string, (name: string) => boolean>();
        const leastPrivilege = readFileSync(path.join(root, "ops/mariadb/least-privilege.sh"), "utf8");
        const compose = readFileSync(path.join(root, "docker-compose.yml"), "utf8");
        const problems: string[] = [];
        for (const { object, spec } of workloads(objects())) {
          for (const c of containersOf(spec)) {
            const names: string[] = (c.env ?? []).map((e: any) => e.name);
            if (c.envFrom) problems.push(`${id(object)} container ${c.name}: envFrom sets settings this test cannot check`);
            let reads: (name: string) => boolean;
            if (c.image.startsWith(`${projectImage}:`)) {
              const workspace = (c.args?.[0] as string).split("/")[0]!;
              if (!readers.has(workspace)) readers.set(workspace, settingsReader(workspace));
              reads = readers.get(workspace)!;
            } else if (c.image.startsWith("mariadb:")) {
              // The image's own variables (as docker-compose.yml sets them) and least-privilege.sh's.
              reads = (n) => new RegExp(`\\$\\{?${n}\\b`).test(leastPrivilege) || (n.startsWith("MARIADB_") && new RegExp(`\\b${n}:`).test(compose));
            } else {
              reads = () => false;
            }
            for (const n of names) if (!reads(n)) problems.push(`${id(object)} container ${c.name}: ${n} is not a setting its program reads`);
            if (new Set(names).size !== names.length) problems.push(`${id(object)} container ${c.name}: a setting is set twice`);
          }
        }
        expect(problems).to.deep.equal([]);
      });

      it("points every *_SERVICE_URL at a rendered Service's gRPC port", () => {
        const services = byKind("Service");
        const problems: string[] = [];
        for (const { object, spec } of workloads(objects())) {
          for (const c of containersOf(spec)) {
            for (const e of c.env ?? []) {
              if (!/_SERVICE_URL$/.test(e.name)) continue;
              const m = /^https?:\/\/([a-z0-9-]+):(\d+)$/.exec(e.value ?? "");
              const svc = m && services.find((s) => s.metadata.name === m[1]);
              const port = svc?.spec.ports.find((p: any) => p.port === Number(m![2]));
              if (port?.name !== "grpc") problems.push(`${id(object)}: ${e.name}=${e.value} is not a Service's grpc port`);
            }
          }
        }
        expect(problems).to.deep.equal([]);
      });

      it("gives every Deployment a grace period longer than the drain it documents, and the drain covers the code's shutdown", () => {
        // exitOnSignals exits at forceAfterMs whatever is left; the servers let calls finish for graceMs before that.
        const forceAfterMs = sourceDefaultMs("packages/platform/src/shutdown.ts", /forceAfterMs = ([\d_]+)/);
        const graceMs = sourceDefaultMs("packages/platform/src/database-service.ts", /servers\.close\(opts\.graceMs \?\? ([\d_]+)\)/);
        expect(graceMs).to.be.lessThan(forceAfterMs);
        const problems: string[] = [];
        for (const d of byKind("Deployment")) {
          const drain = Number(d.metadata.annotations?.["shop.example/drain-seconds"]);
          const pod = d.spec.template.spec;
          if (!(drain > 0)) {
            problems.push(`${id(d)}: no shop.example/drain-seconds annotation`);
            continue;
          }
          if (!(pod.terminationGracePeriodSeconds > drain)) problems.push(`${id(d)}: terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} is not above its drain ${drain}`);
          for (const c of pod.containers) {
            const pause = c.lifecycle?.preStop?.exec?.command;
            const pauseS = pause?.[0] === "sleep" ? Number(pause[1]) : 0;
            if (c.image.startsWith(`${projectImage}:`) && drain < pauseS + forceAfterMs / 1000) {
              problems.push(`${id(d)}: drain ${drain} s is below the preStop pause ${pauseS} s + the process's ${forceAfterMs / 1000} s`);
            }
          }
        }
        expect(problems).to.deep.equal([]);
      });

      it("runs the reconciler as a nightly CronJob that cannot overlap, keeps its state and reports on a volume, and has a start deadline", () => {
        const [cron, ...others] = byKind("CronJob");
        expect(others).to.have.length(0);
        expect(cron!.metadata.name).to.equal("reconciler");
        expect(cron!.spec.concurrencyPolicy).to.equal("Forbid");
        expect(cron!.spec.startingDeadlineSeconds).to.be.a("number").greaterThan(0);
        expect(cron!.spec.successfulJobsHistoryLimit).to.be.a("number").greaterThan(0);
        expect(cron!.spec.failedJobsHistoryLimit).to.be.a("number").greaterThan(0);
        const pod = cron!.spec.jobTemplate.spec.template.spec;
        const [c] = pod.containers;
        expect(c.args).to.deep.equal(["reconciler/dist/main.js", "--once"]);
        const env = Object.fromEntries(c.env.map((e: any) => [e.name, e.value]));
        const data = c.volumeMounts.find((m: any) => m.name === pod.volumes.find((v: any) => v.persistentVolumeClaim)?.name);
        expect(data, "a PersistentVolumeClaim mounted").to.not.equal(undefined);
        for (const setting of ["RECONCILE_STATE_FILE", "RECONCILE_REPORT_DIR"]) {
          expect(env[setting], setting).to.be.a("string").and.satisfy((p: string) => p.startsWith(data.mountPath + "/"));
        }
        const claim = pod.volumes.find((v: any) => v.persistentVolumeClaim).persistentVolumeClaim.claimName;
        find("PersistentVolumeClaim", claim);
      });

      it("migrates with Jobs using the migration user, while services and relays use the rows-only user and do not migrate", () => {
        const prefixes: Record<string, string> = { order: "ORDER", voucher: "VOUCHER", payment: "PAYMENT", delivery: "DELIVERY" };
        for (const [svc, P] of Object.entries(prefixes)) {
          const job = find("Job", `${svc}-migrate`);
          const [c] = job.spec.template.spec.containers;
          expect(c.args).to.deep.equal([`${svc}-service/dist/migrate-main.js`]);
          const url = c.env.find((e: any) => e.name === `${P}_MIGRATION_DATABASE_URL`);
          expect(url?.valueFrom?.secretKeyRef?.name).to.equal(`${svc}-db-migrate`);
        }
        for (const d of byKind("Deployment")) {
          const c = d.spec.template.spec.containers[0];
          if (!c.image.startsWith(`${projectImage}:`)) continue;
          const P = prefixes[d.metadata.name.replace(/-(service|relay)$/, "")]!;
          const env = new Map<string, any>(c.env.map((e: any) => [e.name, e]));
          expect(env.get(`${P}_MIGRATE_ON_START`)?.value, `${id(d)} ${P}_MIGRATE_ON_START`).to.equal("false");
          expect(env.get(`${P}_DATABASE_URL`)?.valueFrom?.secretKeyRef?.name, id(d)).to.match(/-db-app$/);
          expect(env.has(`${P}_MIGRATION_DATABASE_URL`), `${id(d)} holds no migration user`).to.equal(false);
        }
      });

      it(
        variant.inProcessRelays
          ? "runs the relays in the service pods, with their tokens, and scales the standalone relays to 0"
          : "runs the relays standalone and switches the services' in-process relays off",
        () => {
          const setting = (deployment: string, name: string) =>
            find("Deployment", deployment).spec.template.spec.containers[0].env.find((e: any) => e.name === name)?.value;
          expect(find("Deployment", "order-relay").spec.template.spec.containers[0].args).to.deep.equal(["order-service/dist/relay-main.js"]);
          expect(find("Deployment", "payment-relay").spec.template.spec.containers[0].args).to.deep.equal(["payment-service/dist/relay-main.js"]);
          expect(find("Deployment", "delivery-relay").spec.template.spec.containers[0].args).to.deep.equal(["delivery-service/dist/relay-main.js"]);
          const inProcess = String(variant.inProcessRelays);
          expect(setting("order-service", "RELAY_ENABLED")).to.equal(inProcess);
          expect(setting("payment-service", "PAYMENT_RELAY_ENABLED")).to.equal(inProcess);
          expect(setting("delivery-service", "DELIVERY_RELAY_ENABLED")).to.equal(inProcess);
          for (const relay of ["order-relay", "payment-relay", "delivery-relay"]) {
            const replicas = find("Deployment", relay).spec.replicas;
            if (variant.inProcessRelays) expect(replicas, relay).to.equal(0);
            else expect(replicas, relay).to.be.greaterThan(0);
          }
          if (variant.inProcessRelays) {
            // The token each in-process relay presents, as a file from its Secret, and the addresses it delivers to.
            const tokenFile = (deployment: string, name: string, secret: string) => {
              const pod = find("Deployment", deployment).spec.template.spec;
              const file = setting(deployment, name) as string;
              const mount = pod.containers[0].volumeMounts.find((m: any) => file?.startsWith(m.mountPath + "/"));
              expect(pod.volumes.find((v: any) => v.name === mount?.name)?.secret?.secretName, `${deployment} ${name}`).to.equal(secret);
            };
            tokenFile("order-service", "RELAY_TOKEN_FILE", "relay-token");
            tokenFile("payment-service", "PAYMENT_RELAY_TOKEN_FILE", "payment-relay-token");
            tokenFile("delivery-service", "DELIVERY_RELAY_TOKEN_FILE", "delivery-relay-token");
            expect(setting("order-service", "DELIVERY_SERVICE_URL")).to.equal("http://delivery-service:50054");
            expect(setting("payment-service", "ORDER_SERVICE_URL")).to.equal("http://order-service:50051");
            expect(setting("delivery-service", "ORDER_SERVICE_URL")).to.equal("http://order-service:50051");
          }
          // Their health and metrics port is on, on every address of the pod.
          expect(setting("order-relay", "RELAY_METRICS_PORT")).to.equal("9464");
          expect(setting("order-relay", "RELAY_METRICS_HOST")).to.equal("0.0.0.0");
          expect(setting("payment-relay", "PAYMENT_RELAY_METRICS_PORT")).to.equal("9464");
          expect(setting("delivery-relay", "DELIVERY_RELAY_METRICS_PORT")).to.equal("9464");
        },
      );

      it("commits no Secret and makes every Secret it references in docs/deploy.md, with its keys", () => {
        expect(byKind("Secret").map(id), "Secrets are created by hand (docs/deploy.md), never rendered").to.deep.equal([]);
        const refs = new Map<string, Set<string>>();
        const add = (name: string, key?: string) => {
          if (!refs.has(name)) refs.set(name, new Set());
          if (key) refs.get(name)!.add(key);
        };
        for (const { spec } of workloads(objects())) {
          for (const c of containersOf(spec)) {
            for (const e of c.env ?? []) if (e.valueFrom?.secretKeyRef) add(e.valueFrom.secretKeyRef.name, e.valueFrom.secretKeyRef.key);
          }
          for (const v of spec.volumes ?? []) {
            if (!v.secret) continue;
            add(v.secret.secretName);
            for (const item of v.secret.items ?? []) add(v.secret.secretName, item.key);
          }
        }
        expect(refs.size).to.be.greaterThan(0);
        const problems: string[] = [];
        for (const [name, keys] of refs) {
          const command = createSecretCommand(name);
          if (!command) {
            problems.push(`docs/deploy.md has no kubectl create secret … ${name}`);
            continue;
          }
          for (const key of keys) {
            if (!/create secret tls/.test(command) && !new RegExp(`--from-(literal|file)=${key.replace(".", "\\.")}=`).test(command)) {
              problems.push(`docs/deploy.md's command for ${name} does not set key ${key}`);
            }
          }
        }
        expect(problems).to.deep.equal([]);
      });

      it("gives every Deployment a PodDisruptionBudget and every service and the gateway a CPU HorizontalPodAutoscaler", () => {
        const problems: string[] = [];
        for (const d of byKind("Deployment")) {
          const labels = d.spec.template.metadata.labels;
          if (!byKind("PodDisruptionBudget").some((p) => selects(p.spec.selector, labels))) problems.push(`${id(d)}: no PodDisruptionBudget`);
          const scaled = labels["app.kubernetes.io/component"] === "service" || d.metadata.name === "gateway";
          const hpa = byKind("HorizontalPodAutoscaler").find((h) => h.spec.scaleTargetRef.kind === "Deployment" && h.spec.scaleTargetRef.name === d.metadata.name);
          if (scaled && !hpa) problems.push(`${id(d)}: no HorizontalPodAutoscaler`);
          if (hpa && !hpa.spec.metrics.some((m: any) => m.resource?.name === "cpu")) problems.push(`${id(hpa)}: does not scale on CPU`);
          if (hpa && hpa.spec.minReplicas !== d.spec.replicas) problems.push(`${id(hpa)}: minReplicas ${hpa.spec.minReplicas} is not the Deployment's ${d.spec.replicas}`);
        }
        for (const name of ["order-service", "voucher-service", "payment-service", "delivery-service", "gateway"]) find("HorizontalPodAutoscaler", name);
        expect(problems).to.deep.equal([]);
      });

      it("denies ingress by default and lets only the relays and the reconciler (and the gateway) reach the services' RPC ports", () => {
        const policies = byKind("NetworkPolicy");
        const deny = policies.find((p) => Object.keys(p.spec.podSelector).length === 0 && p.spec.policyTypes?.includes("Ingress") && !p.spec.ingress?.length);
        expect(deny, "a default-deny ingress policy").to.not.equal(undefined);

        /** Which pods, by app.kubernetes.io/name, may connect to the named port of a pod with these labels. */
        const admitted = (target: Record<string, string>, port: string, from: string[]): string[] =>
          from.filter((name) => {
            const source = { "app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "shop" };
            return policies.some(
              (p) =>
                selects(p.spec.podSelector, target) &&
                (p.spec.ingress ?? []).some(
                  (rule: any) =>
                    (!rule.ports || rule.ports.some((x: any) => x.port === port)) &&
                    (!rule.from || rule.from.some((f: any) => f.podSelector && !f.namespaceSelector && selects(f.podSelector, source))),
                ),
            );
          });
        const everyone = ["gateway", "order-service", "voucher-service", "payment-service", "delivery-service", "order-relay", "payment-relay", "delivery-relay", "reconciler", "order-migrate", "stranger"];
        // In-process relays live in the service pods: then the order service's pods call the other
        // three, and the payment and delivery services' pods call the order service.
        const inProcess = (...names: string[]) => (variant.inProcessRelays ? names : []);
        const expected: Record<string, string[]> = {
          "order-service": ["gateway", "payment-relay", "delivery-relay", "reconciler", ...inProcess("payment-service", "delivery-service")],
          "voucher-service": ["gateway", "order-relay", "reconciler", ...inProcess("order-service")],
          "payment-service": ["gateway", "order-relay", "reconciler", ...inProcess("order-service")],
          "delivery-service": ["gateway", "order-relay", "reconciler", ...inProcess("order-service")],
        };
        for (const [svc, callers] of Object.entries(expected)) {
          const labels = find("Deployment", svc).spec.template.metadata.labels;
          expect(admitted(labels, "grpc", everyone), `${svc}:grpc`).to.have.members(callers);
          expect(admitted(labels, "http", everyone), `${svc}:http`).to.have.members(["gateway"]);
          // Prometheus, from its namespace, reads /metrics on the HTTP port.
          expect(
            policies.some(
              (p) =>
                selects(p.spec.podSelector, labels) &&
                p.spec.ingress?.some((r: any) => r.ports?.some((x: any) => x.port === "http") && r.from?.some((f: any) => f.namespaceSelector)),
            ),
            `${svc}: Prometheus may scrape`,
          ).to.equal(true);
        }
        for (const relay of ["order-relay", "payment-relay", "delivery-relay"]) {
          expect(admitted(find("Deployment", relay).spec.template.metadata.labels, "metrics", everyone), relay).to.deep.equal([]);
        }
        for (const db of byKind("StatefulSet")) {
          const svc = db.metadata.name.replace(/-db$/, "");
          const own = [`${svc}-service`, `${svc}-relay`, `${svc}-migrate`].filter((n) => n !== "voucher-relay");
          const candidates = [...everyone, "voucher-migrate", "payment-migrate", "delivery-migrate", "payment-relay", "delivery-relay"];
          expect(admitted(db.spec.template.metadata.labels, "mysql", [...new Set(candidates)]), id(db)).to.have.members(own);
        }
      });

      it("serves the gateway from nginx:1.28 as uid 101 on 50443 and 8443 behind a LoadBalancer, with its rendered config", () => {
        const d = find("Deployment", "gateway");
        const pod = d.spec.template.spec;
        const [c] = pod.containers;
        expect(c.image).to.equal("nginx:1.28");
        expect(pod.securityContext.runAsUser).to.equal(101);
        expect(c.readinessProbe.httpGet).to.include({ path: "/healthz", port: "connect" });
        expect(c.volumeMounts.map((m: any) => m.mountPath)).to.include.members(["/etc/nginx/nginx.conf", "/etc/nginx/njs/caller.js", "/etc/nginx/tls", "/tmp", "/var/cache/nginx"]);
        const config = pod.volumes.find((v: any) => v.configMap).configMap.name;
        const map = find("ConfigMap", config);
        expect(Object.keys((map as any).data)).to.have.members(["nginx.conf", "caller.js"]);
        expect(pod.volumes.find((v: any) => v.secret).secret.secretName).to.equal("gateway-tls");
        const svc = find("Service", "gateway");
        expect(svc.spec.type).to.equal("LoadBalancer");
        expect(svc.spec.ports.map((p: any) => [p.name, p.port])).to.deep.equal([
          ["grpc", 50443],
          ["connect", 8443],
        ]);
        // The gateway's upstreams, as the contract names them.
        for (const [name, grpc, http] of [
          ["order-service", 50051, 8081],
          ["voucher-service", 50052, 8082],
          ["payment-service", 50053, 8083],
          ["delivery-service", 50054, 8084],
        ] as const) {
          expect(find("Service", name).spec.ports.map((p: any) => [p.name, p.port])).to.deep.equal([
            ["grpc", grpc],
            ["http", http],
          ]);
        }
      });

      it("carries ops/prometheus/alerts.yml unchanged as a PrometheusRule, and scrapes the services and relays", () => {
        const alerts = parse(readFileSync(path.join(root, "ops/prometheus/alerts.yml"), "utf8"));
        expect(find("PrometheusRule", "shop-alerts").spec.groups).to.deep.equal(alerts.groups);
        const monitors = byKind("ServiceMonitor");
        const problems: string[] = [];
        for (const s of byKind("Service")) {
          const component = s.metadata.labels?.["app.kubernetes.io/component"];
          if (component !== "service" && component !== "relay") continue;
          const m = monitors.find((x) => selects(x.spec.selector, s.metadata.labels ?? {}));
          if (!m) problems.push(`${id(s)}: no ServiceMonitor`);
          else if (!m.spec.endpoints.every((e: any) => s.spec.ports.some((p: any) => p.name === e.port))) problems.push(`${id(s)}: its ServiceMonitor names a port it lacks`);
        }
        expect(problems).to.deep.equal([]);
      });
    });
  }

  it("runs in-cluster databases only in the local overlay, each with its volume and the least-privilege users", () => {
    const local = rendered.get("overlays/local")!;
    const production = rendered.get("overlays/production")!;
    expect(production.filter((o) => o.kind === "StatefulSet")).to.have.length(0);
    const dbs = local.filter((o) => o.kind === "StatefulSet");
    expect(dbs.map((d) => d.metadata.name)).to.have.members(["order-db", "voucher-db", "payment-db", "delivery-db"]);
    const init = local.find((o) => o.kind === "ConfigMap" && o.metadata.name.startsWith("mariadb-init"))!;
    expect((init as any).data["least-privilege.sh"]).to.equal(readFileSync(path.join(root, "ops/mariadb/least-privilege.sh"), "utf8"));
    for (const db of dbs) {
      expect(db.spec.volumeClaimTemplates?.[0]?.spec.resources.requests.storage, id(db)).to.be.a("string");
      const pod = db.spec.template.spec;
      expect(pod.volumes.find((v: any) => v.configMap)?.configMap.name).to.equal(init.metadata.name);
      const env = pod.containers[0].env.map((e: any) => e.name);
      expect(env).to.include.members(["APP_USER", "APP_PASSWORD", "MIGRATE_USER", "MIGRATE_PASSWORD", "MARIADB_DATABASE", "MARIADB_ROOT_PASSWORD"]);
    }
    // More replicas in production.
    const replicas = (objects: K8sObject[], name: string) => objects.find((o) => o.kind === "Deployment" && o.metadata.name === name)!.spec.replicas;
    for (const name of ["order-service", "voucher-service", "payment-service", "delivery-service", "gateway"]) {
      expect(replicas(production, name), name).to.be.greaterThan(replicas(local, name));
    }
  });
});
