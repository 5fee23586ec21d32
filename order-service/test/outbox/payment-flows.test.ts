import { expect } from "chai";
import type { RowDataPacket } from "mysql2/promise";
import type { RelayConfig } from "@shop/engine/relay";
import { PaymentOutcome, RefusalReason } from "@shop/sdk/payment";
import { roleToken } from "@shop/testkit/auth";
import { startTestService, type TestService } from "../../../payment-service/test/helpers.js";
import { OrderStore } from "../../src/db/order-store.js";
import { startPaymentRelays, type PaymentRelays } from "../../src/outbox/payment-relays.js";
import { quietLogger } from "./fake-voucher-service.js";
import { eventually, freshOutboxDb, recordingLogger, type OutboxDb } from "./outbox-db.js";

/** Small timings so failure paths play out in milliseconds. */
const FAST: RelayConfig = {
  batchSize: 50,
  concurrency: 2,
  leaseMs: 5_000,
  pollIntervalMs: 50,
  callTimeoutMs: 2_000,
  retryBaseMs: 20,
  retryMaxMs: 100,
  maxAttempts: 20,
  maxRequestBytes: 1024 * 1024,
};

/**
 * The order service's charge and refund flows against a real payment service
 * (in this process, on its own database) and a real order database: the rows
 * CreateOrder and CancelOrder write are delivered to ChargeOrder and
 * RefundOrder, each decided once; a refused caller keeps its rows pending and
 * says which setting to check; a refund the payment service cannot decide is
 * parked for a person.
 */
describe("the charge and refund flows against a real payment service", function () {
  this.timeout(60_000);
  let o: OutboxDb;
  let pay: TestService;
  let store: OrderStore;
  let running: PaymentRelays[] = [];
  let n = 0;

  const start = (token = roleToken("relay"), logger = quietLogger) => {
    const r = startPaymentRelays({ pool: o.pool, logger, config: FAST, paymentServiceUrl: pay.grpcUrl, token });
    running.push(r);
    r.charge.start();
    r.refund.start();
    return r;
  };
  const rows = async (table: "charge_outbox" | "refund_outbox", orderId: string) => {
    const [r] = await o.pool.query<RowDataPacket[]>(`SELECT status, attempts, last_error AS lastError FROM ${table} WHERE order_id = ?`, [orderId]);
    return r[0] as { status: string; attempts: number; lastError: string | null } | undefined;
  };
  const createPaid = async (customerId: string, totalCents: number) =>
    (await store.create({ customerId, totalCents, currency: "EUR", requestId: `flows-${++n}`, paymentMethod: "ACCOUNT" })).order.id;

  before(async () => {
    [o, pay] = await Promise.all([freshOutboxDb(), startTestService()]);
    store = new OrderStore({ pool: o.pool, logger: quietLogger });
    const c = pay.client();
    await c.openAccount({ customerId: "funded", currency: "EUR" });
    await c.topUp({ customerId: "funded", amountCents: 30_000n, currency: "EUR", requestId: "flows-funding" });
    await c.openAccount({ customerId: "broke", currency: "EUR" });
  });
  afterEach(async () => {
    await Promise.all(running.flatMap((r) => [r.charge.stop(), r.refund.stop()]));
    running.forEach((r) => r.close());
    running = [];
  });
  after(async () => {
    await Promise.allSettled([o?.close(), pay?.stop()]);
  });

  it("delivers charge requests: each decided once, CHARGED while the balance covers it, REFUSED otherwise", async () => {
    const paid = [await createPaid("funded", 10_000), await createPaid("funded", 12_000)];
    const refused = await createPaid("broke", 5_000);
    start();
    await eventually("every charge request is delivered", async () => {
      for (const id of [...paid, refused]) if ((await rows("charge_outbox", id))?.status !== "delivered") return false;
      return true;
    });
    const { payments } = await pay.client().batchGetOrderPayments({ orderIds: [...paid, refused] });
    const byOrder = new Map(payments.map((p) => [p.orderId, p]));
    for (const id of paid) expect(byOrder.get(id)?.chargeOutcome, id).to.equal(PaymentOutcome.CHARGED);
    expect(byOrder.get(refused)).to.deep.include({ chargeOutcome: PaymentOutcome.REFUSED, refusalReason: RefusalReason.INSUFFICIENT_FUNDS });
    expect((await pay.client().getAccount({ customerId: "funded" })).account!.balanceCents).to.equal(8_000n);
    expect(await pay.count("ledger_entries", "kind = 'CHARGE' AND amount_cents < 0")).to.equal(2);
    await pay.expectLedgerSound();
  });

  it("delivers a cancelled charged order's refund once, and the balance is back", async () => {
    const id = await createPaid("funded", 3_000);
    start();
    await eventually("the charge is delivered", async () => (await rows("charge_outbox", id))?.status === "delivered");
    // What the payment service's outcome relay would deliver.
    await store.recordPaymentOutcome({ messageKey: `charge:${id}`, orderId: id, event: "CHARGED", amountCents: 3_000, currency: "EUR" });
    const before = (await pay.client().getAccount({ customerId: "funded" })).account!.balanceCents;
    await store.cancel(id);
    await eventually("the refund is delivered", async () => (await rows("refund_outbox", id))?.status === "delivered");
    const [p] = (await pay.client().batchGetOrderPayments({ orderIds: [id] })).payments;
    expect(p?.refunded).to.equal(true);
    expect((await pay.client().getAccount({ customerId: "funded" })).account!.balanceCents).to.equal(before + 3_000n);
    expect(await pay.count("ledger_entries", `kind = 'REFUND' AND amount_cents > 0 AND order_id = '${id}'`)).to.equal(1);
    await pay.expectLedgerSound();
  });

  it("parks a refund the payment service cannot decide (no decided charge), naming why, and moves no money", async () => {
    const id = `01NEVERCHARGED${String(++n).padStart(12, "0")}`;
    await o.pool.query(
      "INSERT INTO refund_outbox (order_id, amount_cents, currency, status, attempts, next_attempt_at, created_at) VALUES (?, 700, 'EUR', 'pending', 0, NOW(3), NOW(3))",
      [id],
    );
    const entries = await pay.count("ledger_entries");
    start();
    await eventually("the refund request is dead", async () => (await rows("refund_outbox", id))?.status === "dead");
    expect((await rows("refund_outbox", id))?.lastError).to.match(/FAILED_PRECONDITION: order .* has no decided charge to refund/);
    expect(await pay.count("ledger_entries")).to.equal(entries);
    expect(await pay.count("inbox", `message_key = 'refund:${id}'`)).to.equal(0);
  });

  it("keeps charge requests pending while the payment service refuses the relay's token, says which setting to check, then delivers", async () => {
    const id = await createPaid("funded", 1_000);
    const { logger, records } = recordingLogger();
    // The shop's token: addressed to the payment service, without payments:charge.
    const wrong = start(roleToken("shop"), logger);
    await eventually("the charge request was refused at least twice", async () => ((await rows("charge_outbox", id))?.attempts ?? 0) >= 2);
    expect((await rows("charge_outbox", id))?.status).to.equal("pending");
    expect(records.some((r) => r.level >= 50 && /refused the relay itself \(PERMISSION_DENIED\).*lacks payments:charge/.test(r.msg))).to.equal(true);
    await Promise.all([wrong.charge.stop(), wrong.refund.stop()]);
    start();
    await eventually("the charge is delivered with the right token", async () => (await rows("charge_outbox", id))?.status === "delivered");
    const [p] = (await pay.client().batchGetOrderPayments({ orderIds: [id] })).payments;
    expect(p?.chargeOutcome).to.equal(PaymentOutcome.CHARGED);
  });
});
