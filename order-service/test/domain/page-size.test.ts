import { expect } from "chai";
import { pageSize } from "../../src/domain/page-size.js";

describe("pageSize", () => {
  it("uses the default for 0 and lowers large values to the maximum", () => {
    const limits = { default: 50, max: 500 };
    expect(pageSize(0, limits)).to.equal(50);
    expect(pageSize(7, limits)).to.equal(7);
    expect(pageSize(500, limits)).to.equal(500);
    expect(pageSize(100_000, limits)).to.equal(500);
  });
});
