import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import fc from "fast-check";
import { qualifiesForVoucher } from "@shop/order-service/domain/order";
import { Cluster } from "./cluster.js";
import { withRetry } from "./traffic.js";

type Status = "PENDING" | "SENT" | "CANCELLED";
interface ModelOrder {
  id: string;
  customerId: string;
  totalCents: bigint;
  status: Status;
}
/** The model: the orders of this run and what each should be. Vouchers due = the sent, qualifying ones. */
interface Model {
  orders: ModelOrder[];
}
interface Real {
  cluster: Cluster;
}

const owed = (o: ModelOrder) => o.status === "SENT" && qualifiesForVoucher({ currency: "EUR", totalCents: Number(o.totalCents) });

let requestSeq = 0;

async function expectCode(p: Promise<unknown>, code: Code): Promise<void> {
  try {
    await p;
  } catch (err) {
    expect(Code[ConnectError.from(err).code]).to.equal(Code[code]);
    return;
  }
  expect.fail(`expected ${Code[code]}`);
}

class Create implements fc.AsyncCommand<Model, Real> {
  constructor(readonly totalCents: bigint, readonly customer: number) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    const customerId = `model-${this.customer}`;
    const { order } = await withRetry(() =>
      r.cluster.orders.createOrder({ customerId, totalCents: this.totalCents, currency: "EUR", requestId: `model-${process.pid}-${requestSeq++}` }),
    );
    m.orders.push({ id: order!.id, customerId, totalCents: this.totalCents, status: "PENDING" });
  }
  toString = () => `create(${this.totalCents})`;
}

class MarkSent implements fc.AsyncCommand<Model, Real> {
  constructor(readonly pick: number) {}
  check = (m: Readonly<Model>) => m.orders.length > 0;
  async run(m: Model, r: Real): Promise<void> {
    const o = m.orders[this.pick % m.orders.length]!;
    if (o.status === "CANCELLED") return expectCode(r.cluster.orders.markOrderSent({ orderId: o.id }), Code.FailedPrecondition);
    const res = await withRetry(() => r.cluster.orders.markOrderSent({ orderId: o.id }));
    expect(res.changed).to.equal(o.status === "PENDING");
    o.status = "SENT";
  }
  toString = () => `markSent(#${this.pick})`;
}

class Cancel implements fc.AsyncCommand<Model, Real> {
  constructor(readonly pick: number) {}
  check = (m: Readonly<Model>) => m.orders.length > 0;
  async run(m: Model, r: Real): Promise<void> {
    const o = m.orders[this.pick % m.orders.length]!;
    if (o.status === "SENT") return expectCode(r.cluster.orders.cancelOrder({ orderId: o.id }), Code.FailedPrecondition);
    const res = await withRetry(() => r.cluster.orders.cancelOrder({ orderId: o.id }));
    expect(res.changed).to.equal(o.status === "PENDING");
    o.status = "CANCELLED";
  }
  toString = () => `cancel(#${this.pick})`;
}

/** Lets the relay drain the outbox, then compares the vouchers of this run's orders with the model. */
class RelayTick implements fc.AsyncCommand<Model, Real> {
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    await r.cluster.drained(20_000);
    await expectVouchersMatch(m, r);
  }
  toString = () => "relayTick";
}

class Crash implements fc.AsyncCommand<Model, Real> {
  constructor(readonly target: "relay" | "voucher") {}
  check = () => true;
  async run(_m: Model, r: Real): Promise<void> {
    if (this.target === "relay") await r.cluster.restartRelay(0);
    else await r.cluster.restartVoucher();
  }
  toString = () => `crash(${this.target})`;
}

/** IssueVoucher replayed for an owed order (delivered or not yet): one voucher, the same one every time. */
class DuplicateDelivery implements fc.AsyncCommand<Model, Real> {
  constructor(readonly pick: number) {}
  check = (m: Readonly<Model>) => m.orders.some(owed);
  async run(m: Model, r: Real): Promise<void> {
    const due = m.orders.filter(owed);
    const o = due[this.pick % due.length]!;
    const req = { orderId: o.id, customerId: o.customerId, orderTotalCents: o.totalCents, currency: "EUR" };
    const first = await withRetry(() => r.cluster.vouchers.issueVoucher(req));
    const again = await withRetry(() => r.cluster.vouchers.issueVoucher(req));
    expect(again.created).to.equal(false);
    expect(again.voucher!.id).to.equal(first.voucher!.id);
  }
  toString = () => `duplicateDelivery(#${this.pick})`;
}

async function expectVouchersMatch(m: Model, r: Real): Promise<void> {
  if (m.orders.length === 0) return;
  const { vouchers } = await withRetry(() => r.cluster.vouchers.batchGetVouchersByOrder({ orderIds: m.orders.map((o) => o.id) }));
  expect(vouchers.map((v) => v.orderId).sort()).to.deep.equal(m.orders.filter(owed).map((o) => o.id).sort());
}

const commands = [
  fc.tuple(fc.oneof(fc.constantFrom(9_999n, 10_000n, 10_001n), fc.bigInt({ min: 1n, max: 30_000n })), fc.nat(3)).map(([t, c]) => new Create(t, c)),
  fc.nat().map((i) => new MarkSent(i)),
  fc.nat().map((i) => new MarkSent(i)),
  fc.nat().map((i) => new Cancel(i)),
  fc.constant(new RelayTick()),
  fc.constantFrom("relay" as const, "voucher" as const).map((t) => new Crash(t)),
  fc.nat().map((i) => new DuplicateDelivery(i)),
];

describe("model: random command sequences against the real processes", function () {
  this.timeout(600_000);
  let cluster: Cluster;
  before(async () => {
    cluster = new Cluster({ name: "model", inProcessRelay: false, relays: 1, reconciler: false });
    await cluster.start();
  });
  after(() => cluster?.stop());

  it("keeps one voucher per sent qualifying order through create, mark sent, cancel, relay ticks, crashes and duplicate deliveries", async () => {
    const seed = process.env.FAULT_SEED ? Number(process.env.FAULT_SEED) : (Date.now() ^ (Math.random() * 2 ** 31)) | 0;
    const numRuns = Number(process.env.FAULT_RUNS ?? 6);
    try {
      await fc.assert(
        fc.asyncProperty(fc.commands(commands, { maxCommands: 14 }), async (cmds) => {
          const model: Model = { orders: [] };
          const real: Real = { cluster };
          await fc.asyncModelRun(() => ({ model, real }), cmds);
          await cluster.drained(20_000);
          await expectVouchersMatch(model, real);
          await cluster.expectLedgerClean();
        }),
        { seed, numRuns, verbose: 1, endOnFailure: true },
      );
    } catch (err) {
      console.log(`      model test failed; replay it with FAULT_SEED=${seed} npm run test:faults -- -g model`);
      throw err;
    }
  });
});
