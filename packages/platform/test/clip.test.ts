import { expect } from "chai";
import { clip, quote } from "../src/clip.js";

describe("clipping what a caller sent", () => {
  it("keeps short text as it is and cuts long text, saying how much was left out", () => {
    expect(clip("alice")).to.equal("alice");
    expect(clip("x".repeat(128))).to.equal("x".repeat(128));
    expect(clip("x".repeat(129))).to.equal(`${"x".repeat(128)}…(1 more)`);
    expect(clip("abcdef", 3)).to.equal("abc…(3 more)");
  });

  it("never cuts a surrogate pair in half, and escapes control characters so a value cannot break a log line", () => {
    expect(clip("ab😀cd", 3)).to.equal("ab…(4 more)");
    expect(clip("a\nb\r\u0000c\u2028")).to.equal("a\\u000ab\\u000d\\u0000c\\u2028");
  });

  it("quotes any JSON value, clipped", () => {
    expect(quote("HS256")).to.equal('"HS256"');
    expect(quote({ a: 1 })).to.equal('{"a":1}');
    expect(quote(undefined)).to.equal("undefined");
    expect(quote("y".repeat(1000))).to.have.length(128 + "…(873 more)".length);
  });
});
