import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import { createPool, type Pool } from "@shop/platform/db";
import { VoucherStore } from "../src/db/voucher-store.js";
import { VOUCHER_CODE_PATTERN } from "../src/domain/voucher.js";
import { createVouchers } from "../src/vouchers.js";
import { captureLogger, expectCode, issueRequest, LEVEL, orderId, startTestService, type TestService } from "./helpers.js";

describe("BatchIssueVouchers", () => {
  let t: TestService;
  before(async () => {
    t = await startTestService({ maxBatch: 50 });
  });
  after(async () => {
    await t?.stop();
  });

  it("answers new, replayed, conflicting and invalid items each on its own, in request order", async () => {
    const replayed = issueRequest({ customerId: "cust-r" });
    const conflicting = issueRequest({ customerId: "cust-c" });
    const earlier = await t.client.issueVoucher(replayed);
    const conflictOriginal = await t.client.issueVoucher(conflicting);
    const fresh = [issueRequest(), issueRequest({ orderTotalCents: 9_999n })];
    const before = await t.count();

    const items = [
      fresh[0]!,
      { ...conflicting, customerId: "cust-other" },
      issueRequest({ currency: "USD" }),
      replayed,
      issueRequest({ orderId: "" }),
      fresh[1]!,
      { ...issueRequest(), orderTotalCents: 0n },
    ];
    const { results } = await t.client.batchIssueVouchers({ items });

    expect(results.map((r) => r.orderId)).to.deep.equal(items.map((i) => i.orderId));
    expect(results.map((r) => [r.created, r.errorCode])).to.deep.equal([
      [true, 0],
      [false, Code.AlreadyExists],
      [false, Code.InvalidArgument],
      [false, 0],
      [false, Code.InvalidArgument],
      [true, 0],
      [false, Code.InvalidArgument],
    ]);
    expect(results[1]!.errorMessage).to.equal(`voucher for order ${conflicting.orderId} was issued for a different customer`);
    expect(results[1]!.voucher).to.equal(undefined);
    // Each bad item gets exactly what IssueVoucher answers for it: IssueVoucherRequest's rules, from the proto.
    expect(results[2]!.errorMessage).to.equal("invalid IssueVoucherRequest: currency: must equal `EUR`");
    expect(results[4]!.errorMessage).to.equal("invalid IssueVoucherRequest: order_id: value is required");
    expect(results[6]!.errorMessage).to.equal(
      "invalid IssueVoucherRequest: order_total_cents: must be greater than 0 and less than or equal to 10000000000",
    );
    expect(results[3]!.voucher).to.deep.equal(earlier.voucher);
    for (const i of [0, 5]) {
      expect(results[i]!.voucher).to.include({ orderId: items[i]!.orderId, customerId: items[i]!.customerId });
      expect(results[i]!.voucher!.orderTotalCents).to.equal(items[i]!.orderTotalCents);
      expect(results[i]!.voucher!.code).to.match(VOUCHER_CODE_PATTERN);
    }

    // Only the two new orders were written; the conflicting one kept its original voucher.
    expect(await t.count()).to.equal(before + 2);
    const [kept] = (await t.client.batchGetVouchersByOrder({ orderIds: [conflicting.orderId] })).vouchers;
    expect(kept).to.deep.equal(conflictOriginal.voucher);
    for (const i of [2, 6]) expect(await t.count(items[i]!.orderId)).to.equal(0);

    const summary = t.lines.find((l) => l.msg === "batch issued 2 voucher(s)");
    expect(summary).to.include({ level: LEVEL.info, items: 7, created: 2, replayed: 1, conflict: 1, invalid: 3 });
  });

  it("refuses an item on any of IssueVoucherRequest's rules, even one only the proto declares (the traceparent's form)", async () => {
    const item = { ...issueRequest(), traceparent: "00-not-a-traceparent" };
    const single = await expectCode(t.client.issueVoucher(item), Code.InvalidArgument);
    const { results } = await t.client.batchIssueVouchers({ items: [item, issueRequest()] });
    expect(results.map((r) => r.errorCode)).to.deep.equal([Code.InvalidArgument, 0]);
    expect(results[0]!.errorMessage).to.equal(single.rawMessage).and.match(/^invalid IssueVoucherRequest: traceparent: /);
    expect(await t.count(item.orderId)).to.equal(0);
  });

  it("answers a replayed batch with the same vouchers and created=false", async () => {
    const items = Array.from({ length: 10 }, () => issueRequest());
    const first = await t.client.batchIssueVouchers({ items });
    const again = await t.client.batchIssueVouchers({ items });
    expect(first.results.every((r) => r.created)).to.equal(true);
    expect(again.results.every((r) => !r.created && r.errorCode === 0)).to.equal(true);
    expect(again.results.map((r) => r.voucher)).to.deep.equal(first.results.map((r) => r.voucher));
  });

  it("refuses the whole call when it is empty, too large or names an order twice, and writes nothing", async () => {
    const before = await t.count();
    expect((await expectCode(t.client.batchIssueVouchers({ items: [] }), Code.InvalidArgument)).rawMessage).to.equal(
      "invalid BatchIssueVouchersRequest: items: must contain at least 1 item(s)",
    );
    const tooMany = Array.from({ length: 51 }, () => issueRequest());
    expect((await expectCode(t.client.batchIssueVouchers({ items: tooMany }), Code.InvalidArgument)).rawMessage).to.match(/at most 50/);
    const dup = issueRequest();
    const twice = [issueRequest(), dup, { ...dup, customerId: "someone-else" }];
    expect((await expectCode(t.client.batchIssueVouchers({ items: twice }), Code.InvalidArgument)).rawMessage).to.match(
      /items\[1\] and items\[2\] have the same order_id/,
    );
    expect(await t.count()).to.equal(before);
  });

  it("gives concurrent overlapping batches exactly one voucher per order", async () => {
    const shared = Array.from({ length: 40 }, () => issueRequest());
    const batches = Array.from({ length: 8 }, (_, b) => {
      // Each batch takes a different slice, in a different order, of the shared orders plus a few of its own.
      const slice = shared.filter((_, i) => (i + b) % 3 !== 0);
      const mine = Array.from({ length: 5 }, () => issueRequest());
      return (b % 2 === 0 ? slice : slice.reverse()).concat(mine);
    });
    const responses = await Promise.all(batches.map((items) => t.client.batchIssueVouchers({ items })));

    const byOrder = new Map<string, Set<string>>();
    let created = 0;
    for (const { results } of responses) {
      for (const r of results) {
        expect(r.errorCode, r.errorMessage).to.equal(0);
        if (r.created) created++;
        byOrder.set(r.orderId, (byOrder.get(r.orderId) ?? new Set()).add(r.voucher!.id));
      }
    }
    for (const ids of byOrder.values()) expect(ids.size).to.equal(1);
    expect(created).to.equal(byOrder.size);
    // Straight from the database: every order has exactly one row, the ISSUED voucher it was answered with.
    const orderIds = [...byOrder.keys()].sort();
    const rows = await t.db.sql(`SELECT order_id, id, status FROM vouchers WHERE order_id IN (${orderIds.map((o) => `'${o}'`).join(",")}) ORDER BY order_id`);
    expect(rows.trim().split("\n")).to.deep.equal(orderIds.map((o) => `${o}\t${[...byOrder.get(o)!][0]}\tISSUED`));
  });
});

describe("issuing when a fresh code is already taken", () => {
  let t: TestService;
  let pool: Pool;
  before(async () => {
    t = await startTestService();
    pool = createPool({ url: t.db.url, connectionLimit: 2 });
  });
  after(async () => {
    await pool?.end();
    await t?.stop();
  });

  it("retries with a new code instead of returning another order's voucher", async () => {
    const taken = (await t.client.issueVoucher(issueRequest())).voucher!;
    const codes = [taken.code, "V5-AAAA-BBBB-CCCC-DDDD", taken.code, "V5-AAAA-BBBB-CCCC-EEEE"];
    const { logger, lines } = captureLogger();
    const vouchers = createVouchers({ store: new VoucherStore(pool), logger, newCode: () => codes.shift()! });

    const single = await vouchers.issueOne({ orderId: orderId(), customerId: "cust-x", orderTotalCents: 15_000n, currency: "EUR" });
    expect(single.created).to.equal(true);
    expect(single.voucher.code).to.equal("V5-AAAA-BBBB-CCCC-DDDD");
    expect(single.voucher.id).not.to.equal(taken.id);

    const [batchItem] = await vouchers.issueBatch([{ orderId: orderId(), customerId: "cust-y", orderTotalCents: 15_000n, currency: "EUR" }]);
    expect(batchItem).to.include({ created: true });
    expect(batchItem && "voucher" in batchItem && batchItem.voucher.code).to.equal("V5-AAAA-BBBB-CCCC-EEEE");
    expect(lines.filter((l) => l.msg.startsWith("voucher code collision"))).to.have.length(2);
  });

  it("gives up with an error after a bounded number of attempts", async () => {
    const taken = (await t.client.issueVoucher(issueRequest())).voucher!;
    const vouchers = createVouchers({ store: new VoucherStore(pool), logger: captureLogger().logger, newCode: () => taken.code, maxCodeAttempts: 3 });
    const id = orderId();
    let failure: unknown;
    await vouchers.issueOne({ orderId: id, customerId: "c", orderTotalCents: 15_000n, currency: "EUR" }).catch((err) => (failure = err));
    expect(String(failure)).to.match(/no free voucher code after 3 attempts/);
    expect(await t.count(id)).to.equal(0);
  });
});
