import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";

const root = path.resolve(import.meta.dirname, "..");
const buf = path.join(root, "node_modules/.bin/buf");

function listFiles(dir: string, base = dir): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = path.join(dir, name);
    return statSync(p).isDirectory() ? listFiles(p, base) : [path.relative(base, p)];
  });
}

describe("protos and generated code", () => {
  it("pass buf lint", () => {
    execFileSync(buf, ["lint"], { cwd: root, stdio: "pipe" });
  });

  it("match what buf generate writes now (the committed SDK is not stale)", () => {
    const out = mkdtempSync(path.join(tmpdir(), "shop-gen-"));
    try {
      const template = readFileSync(path.join(root, "buf.gen.yaml"), "utf8").replace("out: packages/sdk/src/gen", `out: ${out}`);
      execFileSync(buf, ["generate", "--template", template], { cwd: root, stdio: "pipe" });
      const committedDir = path.join(root, "packages/sdk/src/gen");
      const fresh = listFiles(out).sort();
      expect(listFiles(committedDir).sort()).to.deep.equal(fresh);
      for (const f of fresh) {
        expect(readFileSync(path.join(committedDir, f), "utf8"), `${f} is stale: run npm run generate`).to.equal(
          readFileSync(path.join(out, f), "utf8"),
        );
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
