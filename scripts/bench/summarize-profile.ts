/**
 * `npx tsx scripts/bench/summarize-profile.ts <file.cpuprofile> [top=40]`:
 * self time by function and by package/file, the two views that find a hot spot.
 */
import { readFileSync } from "node:fs";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
const [file, topArg] = process.argv.slice(2);
const prof = JSON.parse(readFileSync(file!, "utf8")) as { nodes: Node[]; samples: number[]; timeDeltas: number[] };
const self = new Map<number, number>();
prof.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0)));
const total = [...self.values()].reduce((a, b) => a + b, 0);
const byFn = new Map<string, number>();
const byUrl = new Map<string, number>();
const short = (url: string) => {
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) return url.slice(nm + 13).split("/").slice(0, url.slice(nm + 13).startsWith("@") ? 2 : 1).join("/");
  return url.replace(/^file:\/\/\/work\/main\//, "") || "(native)";
};
for (const n of prof.nodes) {
  const t = self.get(n.id) ?? 0;
  const f = `${n.callFrame.functionName || "(anon)"}  ${short(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
  byFn.set(f, (byFn.get(f) ?? 0) + t);
  const u = short(n.callFrame.url);
  byUrl.set(u, (byUrl.get(u) ?? 0) + t);
}
const top = Number(topArg ?? 40);
const pct = (t: number) => `${((100 * t) / total).toFixed(1).padStart(5)}%  ${(t / 1000).toFixed(0).padStart(7)} ms`;
console.log(`total sampled ${(total / 1e6).toFixed(2)} s`);
console.log("\n-- by package / file --");
for (const [k, v] of [...byUrl].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`${pct(v)}  ${k}`);
console.log("\n-- by function --");
for (const [k, v] of [...byFn].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(v)}  ${k}`);

// `--callers=<functionName>`: where the self time of that function comes from (up to 6 frames up).
const callersOf = process.argv.find((a) => a.startsWith("--callers="))?.slice(10);
if (callersOf) {
  const parent = new Map<number, Node>();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n);
  const stacks = new Map<string, number>();
  for (const n of prof.nodes) {
    if (n.callFrame.functionName !== callersOf) continue;
    const frames: string[] = [];
    for (let p = parent.get(n.id); p && frames.length < Number(process.env.DEPTH ?? 6); p = parent.get(p.id)) {
      frames.push(`${p.callFrame.functionName || "(anon)"}@${short(p.callFrame.url)}:${p.callFrame.lineNumber + 1}`);
    }
    const k = frames.join(" < ");
    stacks.set(k, (stacks.get(k) ?? 0) + (self.get(n.id) ?? 0));
  }
  console.log(`\n-- callers of ${callersOf} --`);
  for (const [k, v] of [...stacks].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`${pct(v)}  ${k}`);
}

// `--owners`: every sample charged to the nearest frame outside node's own code
// (native and node:internal time goes to the package that asked for it).
if (process.argv.includes("--owners")) {
  const parent = new Map<number, Node>();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n);
  const owners = new Map<string, number>();
  for (const n of prof.nodes) {
    const t = self.get(n.id) ?? 0;
    if (!t) continue;
    let owner = n.callFrame.functionName === "(idle)" ? "(idle)" : n.callFrame.functionName === "(garbage collector)" ? "(gc)" : "(node, no caller)";
    for (let p: Node | undefined = n; p; p = parent.get(p.id)) {
      const u = p.callFrame.url;
      if (u && !u.startsWith("node:")) {
        owner = short(u);
        break;
      }
    }
    owners.set(owner, (owners.get(owner) ?? 0) + t);
  }
  console.log("\n-- by owner (nearest package or project file) --");
  for (const [k, v] of [...owners].sort((a, b) => b[1] - a[1]).slice(0, 30)) console.log(`${pct(v)}  ${k}`);
}
