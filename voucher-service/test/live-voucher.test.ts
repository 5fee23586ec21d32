import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import { VoucherStatus, type Voucher } from "@shop/sdk/voucher";
import { createPool, type Pool } from "@shop/platform/db";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { migrateVoucherDatabase } from "../src/db/migrate.js";
import { VoucherStore } from "../src/db/voucher-store.js";
import type { VoucherCandidate } from "../src/domain/voucher.js";
import { createVouchers } from "../src/vouchers.js";
import { captureLogger, expectCode, issueRequest, LEVEL, startTestService, type TestService } from "./helpers.js";

/**
 * "Exactly one voucher" means exactly one the customer can use: a VOIDED
 * voucher is not the order's voucher. Issuing for an order whose vouchers are
 * all voided issues a new live one; the database's unique index over live
 * vouchers is what keeps racing issuers to one.
 */
describe("one live voucher per order", () => {
  let t: TestService;
  before(async () => {
    t = await startTestService({ poolSize: 20 });
  });
  after(async () => {
    await t?.stop();
  });

  /** status of every row of the order, oldest first, straight from the database. */
  async function rowsOf(orderId: string): Promise<Array<{ id: string; status: string }>> {
    const out = await t.db.sql(`SELECT id, status FROM vouchers WHERE order_id = '${orderId}' ORDER BY id`);
    return out
      .trim()
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => {
        const [id, status] = l.split("\t");
        return { id: id!, status: status! };
      });
  }

  async function issuedCount(result: string): Promise<number> {
    const metric = await t.service.metrics.issued.get();
    return metric.values.find((v) => v.labels.result === result)?.value ?? 0;
  }

  it("issues a new live voucher when the order's only voucher was voided; a replay then returns the live one", async () => {
    const req = issueRequest({ customerId: "cust-live" });
    const first = (await t.client.issueVoucher(req)).voucher!;
    await t.client.voidVoucher({ voucherId: first.id, reason: "voided by mistake" });
    const reissuedBefore = await issuedCount("reissued");

    const again = await t.client.issueVoucher(req);
    expect(again.created).to.equal(true);
    const live = again.voucher!;
    expect(live.id).not.to.equal(first.id);
    expect(live.code).not.to.equal(first.code);
    expect(live).to.include({ orderId: req.orderId, customerId: "cust-live", status: VoucherStatus.ISSUED, voidReason: "" });
    expect(await rowsOf(req.orderId)).to.deep.equal([
      { id: first.id, status: "VOIDED" },
      { id: live.id, status: "ISSUED" },
    ]);

    const line = t.lines.find((l) => l.msg === "voucher reissued after void" && l.orderId === req.orderId);
    expect(line).to.include({ level: LEVEL.info, voucherId: live.id });
    expect(line!.voidedVoucherIds).to.deep.equal([first.id]);
    expect(await issuedCount("reissued")).to.equal(reissuedBefore + 1);

    const replay = await t.client.issueVoucher(req);
    expect(replay.created).to.equal(false);
    expect(replay.voucher).to.deep.equal(live);
    expect(await rowsOf(req.orderId)).to.have.length(2);
  });

  it("does the same for a batch item, next to a plain replay and a new order", async () => {
    const voided = issueRequest();
    const replayed = issueRequest();
    const fresh = issueRequest();
    const old = (await t.client.issueVoucher(voided)).voucher!;
    const kept = (await t.client.issueVoucher(replayed)).voucher!;
    await t.client.voidVoucher({ voucherId: old.id, reason: "test" });

    const { results } = await t.client.batchIssueVouchers({ items: [voided, replayed, fresh] });
    expect(results.map((r) => [r.orderId, r.created, r.errorCode])).to.deep.equal([
      [voided.orderId, true, 0],
      [replayed.orderId, false, 0],
      [fresh.orderId, true, 0],
    ]);
    expect(results[0]!.voucher!.status).to.equal(VoucherStatus.ISSUED);
    expect(results[0]!.voucher!.id).not.to.equal(old.id);
    expect(results[1]!.voucher).to.deep.equal(kept);
    expect((await rowsOf(voided.orderId)).map((r) => r.status)).to.deep.equal(["VOIDED", "ISSUED"]);
    const summary = t.lines.find((l) => l.msg === "batch issued 2 voucher(s)" && l.items === 3);
    expect(summary).to.include({ created: 1, reissued: 1, replayed: 1 });
  });

  it("still refuses a live voucher's order for another customer or total, and writes nothing", async () => {
    const req = issueRequest({ customerId: "cust-keep" });
    const old = (await t.client.issueVoucher(req)).voucher!;
    await t.client.voidVoucher({ voucherId: old.id, reason: "test" });
    const live = (await t.client.issueVoucher(req)).voucher!;
    const err = await expectCode(t.client.issueVoucher({ ...req, customerId: "cust-other" }), Code.AlreadyExists);
    expect(err.rawMessage).to.equal(`voucher for order ${req.orderId} was issued for a different customer`);
    await expectCode(t.client.issueVoucher({ ...req, orderTotalCents: req.orderTotalCents + 1n }), Code.AlreadyExists);
    expect(await rowsOf(req.orderId)).to.deep.equal([
      { id: old.id, status: "VOIDED" },
      { id: live.id, status: "ISSUED" },
    ]);
  });

  it("gives twenty concurrent calls after a void exactly one new live voucher and twenty identical answers", async () => {
    const req = issueRequest();
    const old = (await t.client.issueVoucher(req)).voucher!;
    await t.client.voidVoucher({ voucherId: old.id, reason: "test" });

    const answers = await Promise.all(Array.from({ length: 20 }, () => t.client.issueVoucher(req)));
    expect(answers.filter((a) => a.created)).to.have.length(1);
    const live = answers[0]!.voucher!;
    for (const a of answers) expect(a.voucher).to.deep.equal(live);
    expect(live.status).to.equal(VoucherStatus.ISSUED);
    expect(await rowsOf(req.orderId)).to.deep.equal([
      { id: old.id, status: "VOIDED" },
      { id: live.id, status: "ISSUED" },
    ]);
  });

  it("keeps one live voucher through rounds of void and reissue, racing batches included", async () => {
    const req = issueRequest();
    const voidedIds: string[] = [];
    for (let round = 0; round < 3; round++) {
      const answers = await Promise.all(Array.from({ length: 6 }, () => t.client.batchIssueVouchers({ items: [req] })));
      const ids = new Set(answers.map((a) => a.results[0]!.voucher!.id));
      expect(ids.size).to.equal(1);
      expect(answers.filter((a) => a.results[0]!.created)).to.have.length(1);
      const [id] = [...ids];
      await t.client.voidVoucher({ voucherId: id!, reason: `round ${round}` });
      voidedIds.push(id!);
    }
    const rows = await rowsOf(req.orderId);
    expect(rows.map((r) => r.id).sort()).to.deep.equal([...voidedIds].sort());
    expect(rows.every((r) => r.status === "VOIDED")).to.equal(true);
  });

  describe("the unique index over live vouchers", () => {
    const insert = (id: string, code: string, orderId: string, status: string) =>
      t.db.sql(
        `INSERT INTO vouchers (id, code, order_id, customer_id, order_total_cents, amount_cents, currency, status, issued_at)
         VALUES ('${id}', '${code}', '${orderId}', 'cust-sql', 15000, 500, 'EUR', '${status}', NOW(3))`,
      );

    it("refuses a second ISSUED row for an order, by insert or by update, and allows any number of VOIDED ones", async () => {
      const { orderId } = issueRequest();
      await insert("01SQL0000000000000000000A1", "V5-SQL0-0000-0000-00A1", orderId, "ISSUED");
      let refused: unknown;
      await insert("01SQL0000000000000000000A2", "V5-SQL0-0000-0000-00A2", orderId, "ISSUED").catch((err) => (refused = err));
      expect(String(refused)).to.match(/Duplicate entry .* for key '(vouchers\.)?vouchers_live_order_id_uq'/);

      await insert("01SQL0000000000000000000A3", "V5-SQL0-0000-0000-00A3", orderId, "VOIDED");
      await insert("01SQL0000000000000000000A4", "V5-SQL0-0000-0000-00A4", orderId, "VOIDED");
      refused = undefined;
      await t.db.sql(`UPDATE vouchers SET status = 'ISSUED' WHERE id = '01SQL0000000000000000000A3'`).catch((err) => (refused = err));
      expect(String(refused)).to.match(/Duplicate entry .* for key '(vouchers\.)?vouchers_live_order_id_uq'/);
      expect((await rowsOf(orderId)).map((r) => r.status)).to.deep.equal(["ISSUED", "VOIDED", "VOIDED"]);
    });

    it("holds the order id while the voucher is ISSUED and NULL once it is voided", async () => {
      const req = issueRequest();
      const v = (await t.client.issueVoucher(req)).voucher!;
      const live = () => t.db.sql(`SELECT IFNULL(live_order_id, 'NULL') FROM vouchers WHERE id = '${v.id}'`).then((s) => s.trim());
      expect(await live()).to.equal(req.orderId);
      await t.client.voidVoucher({ voucherId: v.id, reason: "test" });
      expect(await live()).to.equal("NULL");
    });
  });

  describe("BatchGetVouchersByOrder with voided vouchers", () => {
    it("answers one voucher per order: the live one if any, else the most recently voided", async () => {
      const reissued = issueRequest();
      const onlyVoided = issueRequest();
      const plain = issueRequest();
      const a1 = (await t.client.issueVoucher(reissued)).voucher!;
      await t.client.voidVoucher({ voucherId: a1.id, reason: "first" });
      const a2 = (await t.client.issueVoucher(reissued)).voucher!;

      const b1 = (await t.client.issueVoucher(onlyVoided)).voucher!;
      await t.client.voidVoucher({ voucherId: b1.id, reason: "first" });
      const b2 = (await t.client.issueVoucher(onlyVoided)).voucher!;
      await t.client.voidVoucher({ voucherId: b2.id, reason: "second" });
      // The older voucher voided last: "most recently voided" is by voided_at, not by id.
      await t.db.sql(`UPDATE vouchers SET voided_at = '2001-01-01 00:00:00.000' WHERE id = '${b2.id}'`);
      await t.db.sql(`UPDATE vouchers SET voided_at = '2002-01-01 00:00:00.000' WHERE id = '${b1.id}'`);
      const c = (await t.client.issueVoucher(plain)).voucher!;

      const { vouchers } = await t.client.batchGetVouchersByOrder({ orderIds: [plain.orderId, onlyVoided.orderId, reissued.orderId] });
      expect(vouchers.map((v: Voucher) => v.id)).to.deep.equal([c.id, b1.id, a2.id]);
      expect(vouchers[2]!.status).to.equal(VoucherStatus.ISSUED);
      expect(vouchers[1]!.voidReason).to.equal("first");
    });
  });
});

/**
 * A void landing between the insert and its read-back, placed there
 * deterministically by a store that runs it right after the insert (on the
 * real database) instead of waiting for a race to happen.
 */
describe("a void between the insert and its read-back", () => {
  let db: TestDatabase;
  let pool: Pool;
  before(async () => {
    db = await freshDatabase("voucher");
    pool = createPool({ url: db.url, connectionLimit: 2 });
    await migrateVoucherDatabase(pool, captureLogger().logger);
  });
  after(async () => {
    await pool?.end();
    await db?.drop();
  });

  class VoidAfterInsert extends VoucherStore {
    /** Run once, right after the next insert. */
    then?: () => Promise<void>;
    override async insertIgnoringDuplicates(candidates: VoucherCandidate[]): Promise<void> {
      await super.insertIgnoringDuplicates(candidates);
      const step = this.then;
      this.then = undefined;
      await step?.();
    }
  }

  const statuses = async (orderId: string) =>
    (await db.sql(`SELECT status FROM vouchers WHERE order_id = '${orderId}' ORDER BY id`)).trim().split("\n");

  it("issues again when the live voucher that refused the insert is voided before the read", async () => {
    const store = new VoidAfterInsert(pool);
    const { logger, lines } = captureLogger();
    const vouchers = createVouchers({ store, logger });
    const req = issueRequest();
    const first = await vouchers.issueOne(req);
    store.then = async () => {
      expect(await store.void(first.voucher.id, "voided meanwhile")).to.equal(true);
    };

    const again = await vouchers.issueOne(req);
    expect(again).to.include({ created: true, reissued: true });
    expect(again.voucher.status).to.equal("ISSUED");
    expect(again.voucher.id).not.to.equal(first.voucher.id);
    expect(await statuses(req.orderId)).to.deep.equal(["VOIDED", "ISSUED"]);
    expect(lines.find((l) => l.msg === "live voucher voided while issuing; issuing again")).to.include({ attempt: 1 });
    expect(lines.filter((l) => l.msg.startsWith("voucher code collision"))).to.deep.equal([]);
  });

  it("answers our own new voucher, voided before the read, as created and does not issue another", async () => {
    const store = new VoidAfterInsert(pool);
    const vouchers = createVouchers({ store, logger: captureLogger().logger });
    const req = issueRequest();
    store.then = async () => {
      const [row] = await store.findByOrderIds([req.orderId]);
      await store.void(row!.id, "voided at once");
    };
    const answer = await vouchers.issueOne(req);
    expect(answer).to.include({ created: true, reissued: false });
    expect(answer.voucher.status).to.equal("VOIDED");
    expect(await statuses(req.orderId)).to.deep.equal(["VOIDED"]);
  });
});
