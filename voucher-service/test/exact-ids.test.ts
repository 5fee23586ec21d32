import { expect } from "chai";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { createPool, type Pool } from "@shop/platform/db";
import { bearerToken } from "@shop/sdk/clients";
import { VoucherService, VoucherStatus } from "@shop/sdk/voucher";
import { roleToken } from "@shop/testkit/auth";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { migrateVoucherDatabase } from "../src/db/migrate.js";
import { VoucherStore } from "../src/db/voucher-store.js";
import { createVouchers } from "../src/vouchers.js";
import { captureLogger, expectCode, issueRequest, LEVEL, orderId, startTestService, type TestService } from "./helpers.js";

/**
 * Ids are compared exactly, in SQL as in code: customer `alice` is not
 * `ALICE`, order `ORD-1` is not `ord-1`, a voucher id in other case is
 * another id.
 */
describe("exact ids in the voucher database", () => {
  let t: TestService;
  before(async () => {
    t = await startTestService();
  });
  after(async () => {
    await t?.stop();
  });

  it("gives orders whose ids differ only in case a voucher each, single and batch", async () => {
    const base = orderId("Case");
    const variants = [base, base.toLowerCase(), base.toUpperCase()];
    const singles = await Promise.all(variants.map((id) => t.client.issueVoucher(issueRequest({ orderId: id }))));
    expect(singles.map((s) => [s.created, s.voucher!.orderId])).to.deep.equal(variants.map((id) => [true, id]));
    expect(new Set(singles.map((s) => s.voucher!.id)).size).to.equal(3);

    const batchBase = orderId("Batch");
    const items = [batchBase, batchBase.toLowerCase()].map((id) => issueRequest({ orderId: id }));
    const { results } = await t.client.batchIssueVouchers({ items });
    expect(results.map((r) => [r.orderId, r.created, r.errorCode, r.voucher?.orderId])).to.deep.equal(
      items.map((i) => [i.orderId, true, 0, i.orderId]),
    );
    for (const id of [...variants, ...items.map((i) => i.orderId)]) expect(await t.count(id)).to.equal(1);
    expect(t.lines.filter((l) => l.msg.startsWith("voucher code collision"))).to.deep.equal([]);
  });

  it("looks orders up by their exact id", async () => {
    const base = orderId("Look");
    const upper = await t.client.issueVoucher(issueRequest({ orderId: base.toUpperCase() }));
    const { vouchers } = await t.client.batchGetVouchersByOrder({ orderIds: [base.toLowerCase(), base] });
    expect(vouchers).to.deep.equal([]);
    expect((await t.client.batchGetVouchersByOrder({ orderIds: [base.toUpperCase()] })).vouchers).to.deep.equal([upper.voucher]);
  });

  it("treats a voucher id in other case as an unknown voucher for GetVoucher and VoidVoucher", async () => {
    const { voucher } = await t.client.issueVoucher(issueRequest());
    const lower = voucher!.id.toLowerCase();
    expect(lower).not.to.equal(voucher!.id);
    await expectCode(t.client.getVoucher({ voucherId: lower }), Code.NotFound);
    await expectCode(t.client.voidVoucher({ voucherId: lower, reason: "wrong id" }), Code.NotFound);
    expect((await t.client.getVoucher({ voucherId: voucher!.id })).voucher!.status).to.equal(VoucherStatus.ISSUED);
  });

  describe("customers whose ids differ only in case, on both transports", () => {
    // Unique per run, so each customer holds only what this test gave it.
    const suffix = orderId("").slice(1);
    const customers = ["alice", "ALICE", "Alice"].map((base) => `${base}${suffix}`);
    const own = new Map<string, string[]>();

    before(async () => {
      for (const customerId of customers) {
        const { results } = await t.client.batchIssueVouchers({ items: [issueRequest({ customerId }), issueRequest({ customerId })] });
        own.set(customerId, results.map((r) => r.voucher!.id).sort());
      }
    });

    for (const transport of ["grpc", "connect"] as const) {
      const clientFor = (token: string): Client<typeof VoucherService> =>
        createClient(
          VoucherService,
          transport === "grpc"
            ? createGrpcTransport({ baseUrl: `http://127.0.0.1:${t.service.grpcPort}`, defaultTimeoutMs: 10_000, interceptors: [bearerToken(token)] })
            : createConnectTransport({
                baseUrl: `http://127.0.0.1:${t.service.httpPort}`,
                httpVersion: "1.1",
                defaultTimeoutMs: 10_000,
                interceptors: [bearerToken(token)],
              }),
        );
      const codeOf = (call: Promise<unknown>) =>
        call.then(
          () => "OK",
          (err: unknown) => Code[ConnectError.from(err).code],
        );

      it(`[${transport}] lists to each customer only its own vouchers and refuses it the others'`, async () => {
        for (const me of customers) {
          const c = clientFor(roleToken("customer", me));
          const listed = await c.listVouchers({ customerId: me });
          expect(listed.vouchers.map((v) => v.id).sort(), `${me}'s list`).to.deep.equal(own.get(me));
          for (const id of own.get(me)!) expect((await c.getVoucher({ voucherId: id })).voucher!.customerId).to.equal(me);
          for (const other of customers.filter((o) => o !== me)) {
            expect(await codeOf(c.getVoucher({ voucherId: own.get(other)![0]! })), `${me} reading ${other}'s voucher`).to.equal("PermissionDenied");
            expect(await codeOf(c.listVouchers({ customerId: other })), `${me} listing ${other}'s vouchers`).to.equal("PermissionDenied");
          }
        }
      });

      it(`[${transport}] lists to an unrestricted caller exactly the named customer's vouchers`, async () => {
        const c = clientFor(roleToken("admin"));
        for (const customerId of customers) {
          const listed = await c.listVouchers({ customerId });
          expect(listed.vouchers.map((v) => v.id).sort(), customerId).to.deep.equal(own.get(customerId));
        }
      });
    }
  });
});

describe("issuing when the order's row is neither inserted nor found", () => {
  let db: TestDatabase;
  let pool: Pool;
  before(async () => {
    db = await freshDatabase("voucher");
    pool = createPool({ url: db.url, connectionLimit: 2 });
    await migrateVoucherDatabase(pool, captureLogger().logger);
    // A database whose order ids compare without case, as before the binary
    // collation: an insert for `ord-x` hits `ORD-X`'s key, and the read-back by
    // exact id then finds no row of its own.
    await db.sql(
      "ALTER TABLE vouchers MODIFY order_id varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL, " +
        "MODIFY live_order_id varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci " +
        "GENERATED ALWAYS AS (CASE WHEN status = 'ISSUED' THEN order_id END) STORED",
    );
  });
  after(async () => {
    await pool?.end();
    await db?.drop();
  });

  it("fails at once with an error that says so, not as a code collision retried until it gives up", async () => {
    const { logger, lines } = captureLogger();
    const vouchers = createVouchers({ store: new VoucherStore(pool), logger });
    const upper = orderId("ORD").toUpperCase();
    await vouchers.issueOne({ orderId: upper, customerId: "c", orderTotalCents: 15_000n, currency: "EUR" });

    let failure: unknown;
    await vouchers
      .issueOne({ orderId: upper.toLowerCase(), customerId: "c", orderTotalCents: 15_000n, currency: "EUR" })
      .catch((err) => (failure = err));
    expect(String(failure)).to.match(/voucher for order .* was neither inserted nor found/);
    expect(lines.filter((l) => l.msg.startsWith("voucher code collision"))).to.deep.equal([]);
    const logged = lines.find((l) => l.level === LEVEL.error && /neither inserted nor found/.test(l.msg));
    expect(logged).to.include({ orderId: upper.toLowerCase() });
  });
});
