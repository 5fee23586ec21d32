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

  it("match what buf generate writes now (the committed SDK, OpenAPI module, OpenAPI documents and Postman collection are not stale)", () => {
    const tmp = mkdtempSync(path.join(tmpdir(), "shop-gen-"));
    try {
      // Every plugin's output goes to its own folder under tmp instead.
      const outs: string[] = [];
      const template = readFileSync(path.join(root, "buf.gen.yaml"), "utf8").replace(/^(\s*out:\s*)(\S+)\s*$/gm, (_, lead: string, out: string) => {
        outs.push(out);
        return `${lead}${path.join(tmp, out)}`;
      });
      expect(outs).to.include.members(["packages/sdk/src/gen", "packages/platform/src/gen", "docs/api"]);
      execFileSync(buf, ["generate", "--template", template], { cwd: root, stdio: "pipe" });
      for (const out of outs) {
        const committedDir = path.join(root, out);
        const fresh = listFiles(path.join(tmp, out)).sort();
        expect(fresh, out).not.to.be.empty;
        expect(listFiles(committedDir).sort(), `${out}: run npm run generate`).to.deep.equal(fresh);
        for (const f of fresh) {
          expect(readFileSync(path.join(committedDir, f), "utf8"), `${out}/${f} is stale: run npm run generate`).to.equal(
            readFileSync(path.join(tmp, out, f), "utf8"),
          );
        }
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
