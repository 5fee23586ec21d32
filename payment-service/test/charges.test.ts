import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import { MovementKind, PaymentOutcome, RefusalReason } from "@shop/sdk/payment";
import { checkPaymentLedger } from "../src/ledger-check.js";
import { expectCode, startTestService, uniqueId, type TestService, type Transport } from "./helpers.js";

describe("payment service: charging and refunding orders", () => {
  let t: TestService;
  before(async () => {
    t = await startTestService({ poolSize: 20 });
  });
  after(async () => {
    await t?.stop();
  });
  afterEach(async () => {
    await t.expectLedgerSound();
  });

  async function fundedCustomer(cents: bigint): Promise<string> {
    const customerId = uniqueId("cust");
    const c = t.client();
    await c.openAccount({ customerId, currency: "EUR" });
    if (cents > 0n) await c.topUp({ customerId, amountCents: cents, currency: "EUR", requestId: uniqueId("fund") });
    return customerId;
  }
  const balance = async (customerId: string) => (await t.client().getAccount({ customerId })).account!.balanceCents;
  const outboxRow = async (key: string) => {
    const [rows] = await t.pool.query<import("mysql2").RowDataPacket[]>("SELECT order_id, outcome, reason, amount_cents, status FROM payment_outbox WHERE message_key = ?", [key]);
    return rows;
  };

  for (const transport of ["grpc", "connect"] as Transport[]) {
    describe(`over ${transport}`, () => {
      it("charges an order once: the debit, its two entries, and the outcome's outbox row; a replay answers the same outcome", async () => {
        const c = t.client(transport);
        const customerId = await fundedCustomer(10_000n);
        const req = { orderId: uniqueId("ord"), customerId, amountCents: 4_000n, currency: "EUR" };
        const first = await c.chargeOrder(req);
        expect(first).to.include({ outcome: PaymentOutcome.CHARGED, reason: RefusalReason.UNSPECIFIED, decided: true });
        expect(first.movement).to.include({ kind: MovementKind.CHARGE, amountCents: -4_000n, orderId: req.orderId });
        expect(await balance(customerId)).to.equal(6_000n);
        const replay = await c.chargeOrder(req);
        expect(replay.decided).to.equal(false);
        expect(replay.outcome).to.equal(PaymentOutcome.CHARGED);
        expect(replay.movement).to.deep.equal(first.movement);
        expect(await balance(customerId)).to.equal(6_000n);
        expect(await t.count("ledger_entries", `order_id = '${req.orderId}'`)).to.equal(2);
        expect(await outboxRow(`charge:${req.orderId}`)).to.deep.equal([
          { order_id: req.orderId, outcome: "CHARGED", reason: null, amount_cents: 4_000, status: "pending" },
        ]);
        expect(t.lines.some((l) => l.msg === "order charged" && l.orderId === req.orderId)).to.equal(true);
      });

      it("refuses a charge the balance does not cover, as a definite outcome: nothing moves, and a later top-up does not change it", async () => {
        const c = t.client(transport);
        const customerId = await fundedCustomer(999n);
        const req = { orderId: uniqueId("ord"), customerId, amountCents: 1_000n, currency: "EUR" };
        const first = await c.chargeOrder(req);
        expect(first).to.include({ outcome: PaymentOutcome.REFUSED, reason: RefusalReason.INSUFFICIENT_FUNDS, decided: true });
        expect(first.movement).to.equal(undefined);
        await c.topUp({ customerId, amountCents: 5_000n, currency: "EUR", requestId: uniqueId("req") });
        const replay = await c.chargeOrder(req);
        expect(replay).to.include({ outcome: PaymentOutcome.REFUSED, reason: RefusalReason.INSUFFICIENT_FUNDS, decided: false });
        expect(await balance(customerId)).to.equal(5_999n);
        expect(await outboxRow(`charge:${req.orderId}`)).to.have.nested.property("[0].reason", "INSUFFICIENT_FUNDS");
      });

      it("refuses a charge for a customer without an account (NO_ACCOUNT)", async () => {
        const res = await t.client(transport).chargeOrder({ orderId: uniqueId("ord"), customerId: uniqueId("nobody"), amountCents: 100n, currency: "EUR" });
        expect(res).to.include({ outcome: PaymentOutcome.REFUSED, reason: RefusalReason.NO_ACCOUNT, decided: true });
      });

      it("refuses an order charged again with another amount with ALREADY_EXISTS, and moves nothing", async () => {
        const c = t.client(transport);
        const customerId = await fundedCustomer(10_000n);
        const orderId = uniqueId("ord");
        await c.chargeOrder({ orderId, customerId, amountCents: 1_000n, currency: "EUR" });
        const err = await expectCode(c.chargeOrder({ orderId, customerId, amountCents: 2_000n, currency: "EUR" }), Code.AlreadyExists);
        expect(err.rawMessage).to.match(/was charged before with other facts/);
        await expectCode(c.chargeOrder({ orderId, customerId: await fundedCustomer(0n), amountCents: 1_000n, currency: "EUR" }), Code.AlreadyExists);
        expect(await balance(customerId)).to.equal(9_000n);
      });

      it("refunds a charged order exactly once, and refuses to refund an order never charged", async () => {
        const c = t.client(transport);
        const customerId = await fundedCustomer(3_000n);
        const orderId = uniqueId("ord");
        await c.chargeOrder({ orderId, customerId, amountCents: 3_000n, currency: "EUR" });
        expect(await balance(customerId)).to.equal(0n);
        const first = await c.refundOrder({ orderId });
        expect(first).to.include({ outcome: PaymentOutcome.REFUNDED, decided: true });
        expect(first.movement).to.include({ kind: MovementKind.REFUND, amountCents: 3_000n, orderId });
        const replay = await c.refundOrder({ orderId });
        expect(replay).to.include({ outcome: PaymentOutcome.REFUNDED, decided: false });
        expect(replay.movement).to.deep.equal(first.movement);
        expect(await balance(customerId)).to.equal(3_000n);
        expect(await outboxRow(`refund:${orderId}`)).to.have.nested.property("[0].outcome", "REFUNDED");

        // An order whose charge is not decided: refused as an error, and nothing recorded, so its refund can be asked again later.
        const inboxBefore = await t.count("inbox");
        const never = await c.refundOrder({ orderId: uniqueId("never") }).then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        );
        expect(never?.code).to.equal(Code.FailedPrecondition);
        expect(never?.rawMessage).to.match(/has no decided charge to refund; nothing was recorded/);
        expect(await t.count("inbox")).to.equal(inboxBefore);
        const refusedOrder = uniqueId("ord");
        await c.chargeOrder({ orderId: refusedOrder, customerId, amountCents: 1_000_000n, currency: "EUR" });
        expect(await c.refundOrder({ orderId: refusedOrder })).to.include({ outcome: PaymentOutcome.REFUSED, reason: RefusalReason.NOT_CHARGED });
        expect(await balance(customerId)).to.equal(3_000n);
      });

      it("refuses a malformed charge with INVALID_ARGUMENT and writes nothing", async () => {
        const before = await t.count("inbox");
        for (const req of [
          { orderId: "", customerId: "c", amountCents: 1n, currency: "EUR" },
          { orderId: "o 1", customerId: "c", amountCents: 1n, currency: "EUR" },
          { orderId: "o1", customerId: "c", amountCents: 0n, currency: "EUR" },
          { orderId: "o1", customerId: "c", amountCents: 10_000_000_001n, currency: "EUR" },
          { orderId: "o1", customerId: "c", amountCents: 1n, currency: "USD" },
          { orderId: "o1", customerId: "c", amountCents: 1n, currency: "EUR", traceparent: "not-a-traceparent" },
        ]) {
          await expectCode(t.client(transport).chargeOrder(req), Code.InvalidArgument);
        }
        await expectCode(t.client(transport).refundOrder({ orderId: "" }), Code.InvalidArgument);
        expect(await t.count("inbox")).to.equal(before);
      });
    });
  }

  it("compares ids exactly: orders differing in case are two charges, customers differing in case two accounts", async () => {
    const c = t.client();
    const customerId = await fundedCustomer(1_000n);
    await c.chargeOrder({ orderId: "Exact-Order", customerId, amountCents: 100n, currency: "EUR" });
    expect((await c.chargeOrder({ orderId: "exact-order", customerId, amountCents: 100n, currency: "EUR" })).decided).to.equal(true);
    expect(await balance(customerId)).to.equal(800n);
    const res = await c.chargeOrder({ orderId: uniqueId("ord"), customerId: customerId.toUpperCase(), amountCents: 100n, currency: "EUR" });
    expect(res.reason).to.equal(RefusalReason.NO_ACCOUNT);
  });

  it("200 concurrent charges for distinct orders on one account funded for exactly 50: 50 CHARGED, 150 REFUSED, balance 0", async () => {
    const customerId = await fundedCustomer(50n * 700n);
    const clients = [t.client("grpc"), t.client("connect")];
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => clients[i % 2]!.chargeOrder({ orderId: uniqueId(`hot${i}`), customerId, amountCents: 700n, currency: "EUR" })),
    );
    expect(results.filter((r) => r.outcome === PaymentOutcome.CHARGED)).to.have.length(50);
    const refused = results.filter((r) => r.outcome === PaymentOutcome.REFUSED);
    expect(refused).to.have.length(150);
    expect(refused.every((r) => r.reason === RefusalReason.INSUFFICIENT_FUNDS)).to.equal(true);
    expect(await balance(customerId)).to.equal(0n);
    const [rows] = await t.pool.query<import("mysql2").RowDataPacket[]>(
      "SELECT COUNT(*) AS n, SUM(e.amount_cents) AS total FROM ledger_entries e JOIN accounts a ON a.id = e.account_id WHERE a.customer_id = ?",
      [customerId],
    );
    expect({ n: Number(rows[0]!.n), total: Number(rows[0]!.total) }).to.deep.equal({ n: 51, total: 0 });
  });

  it("50 concurrent top-ups with one request id apply once", async () => {
    const customerId = await fundedCustomer(0n);
    const req = { customerId, amountCents: 1_234n, currency: "EUR", requestId: uniqueId("same") };
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => t.client(i % 2 ? "grpc" : "connect").topUp(req)));
    expect(results.filter((r) => r.applied)).to.have.length(1);
    expect(new Set(results.map((r) => r.movement!.id)).size).to.equal(1);
    expect(await balance(customerId)).to.equal(1_234n);
  });

  it("one charge replayed 20 times concurrently debits once, and all 20 answers agree", async () => {
    const customerId = await fundedCustomer(5_000n);
    const req = { orderId: uniqueId("ord"), customerId, amountCents: 1_500n, currency: "EUR" };
    const c = t.client();
    const results = await Promise.all(Array.from({ length: 20 }, () => c.chargeOrder(req)));
    expect(results.filter((r) => r.decided)).to.have.length(1);
    expect(results.every((r) => r.outcome === PaymentOutcome.CHARGED)).to.equal(true);
    expect(new Set(results.map((r) => r.movement!.id)).size).to.equal(1);
    expect(await balance(customerId)).to.equal(3_500n);
    const refunds = await Promise.all(Array.from({ length: 20 }, () => c.refundOrder({ orderId: req.orderId })));
    expect(refunds.filter((r) => r.decided)).to.have.length(1);
    expect(await balance(customerId)).to.equal(5_000n);
  });

  // Declared last: mocha runs it after the describes above.
  describe("metrics", () => {
    it("counts charges and refunds by result on /metrics", async () => {
      const metrics = await (await fetch(`${t.httpUrl}/metrics`)).text();
      for (const result of ["applied", "refused", "replayed", "conflict"]) {
        expect(metrics, result).to.match(new RegExp(`payment_requests_total\\{call="charge",result="${result}"\\} [1-9]`));
      }
      for (const result of ["applied", "refused", "replayed"]) {
        expect(metrics, result).to.match(new RegExp(`payment_requests_total\\{call="refund",result="${result}"\\} [1-9]`));
      }
    });
  });
});

describe("the payment ledger check", () => {
  let t: TestService;
  before(async () => {
    t = await startTestService();
  });
  after(async () => {
    await t?.stop();
  });

  it("finds a balance that is not the sum of its entries, an unbalanced movement, a second debit and a charge without its debit", async () => {
    const c = t.client();
    const customerId = uniqueId("cust");
    await c.openAccount({ customerId, currency: "EUR" });
    await c.topUp({ customerId, amountCents: 1_000n, currency: "EUR", requestId: uniqueId("req") });
    const orderId = uniqueId("ord");
    await c.chargeOrder({ orderId, customerId, amountCents: 400n, currency: "EUR" });
    expect(await checkPaymentLedger(t.pool)).to.deep.equal([]);

    await t.pool.query("UPDATE accounts SET balance_cents = balance_cents + 1 WHERE customer_id = ?", [customerId]);
    await t.pool.query(
      `INSERT INTO ledger_entries (id, movement_id, account_id, kind, amount_cents, currency, order_id, created_at)
       SELECT '01TAMPEREDTAMPEREDTAMPERE', '01TAMPEREDMOVEMENTXXXXXXX', account_id, 'CHARGE', -5, 'EUR', CONCAT(order_id, '-x'), NOW(3)
       FROM ledger_entries WHERE order_id = ? AND amount_cents < 0`,
      [orderId],
    );
    await t.pool.query("UPDATE inbox SET outcome = REPLACE(outcome, 'CHARGED', 'REFUSED') WHERE message_key = ?", [`charge:${orderId}`]);
    const problems = await checkPaymentLedger(t.pool);
    expect(problems.join("\n")).to.include(`balance 601 but its entries sum to 595`);
    expect(problems.join("\n")).to.match(/movement 01TAMPEREDMOVEMENTXXXXXXX: 1 entries on 1 accounts summing to -5/);
    expect(problems.join("\n")).to.include("all EUR entries sum to -5, not 0");
    expect(problems.join("\n")).to.include(`order ${orderId}: a debit, but its charge is recorded as REFUSED`);
  });
});
