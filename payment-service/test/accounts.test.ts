import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { MovementKind } from "@shop/sdk/payment";
import { roleToken, testToken } from "@shop/testkit/auth";
import { AUDIENCES, SCOPES } from "@shop/platform/auth";
import { expectCode, startTestService, uniqueId, type TestService, type Transport } from "./helpers.js";

describe("payment service: accounts, top-ups, statements", () => {
  let t: TestService;
  before(async () => {
    t = await startTestService({ poolSize: 20 });
  });
  after(async () => {
    await t?.expectLedgerSound();
    await t?.stop();
  });

  for (const transport of ["grpc", "connect"] as Transport[]) {
    describe(`over ${transport}`, () => {
      it("opens one account per customer: a second OpenAccount returns the same one, created=false", async () => {
        const c = t.client(transport);
        const customerId = uniqueId("cust");
        const first = await c.openAccount({ customerId, currency: "EUR" });
        expect(first.created).to.equal(true);
        expect(first.account).to.include({ customerId, currency: "EUR", balanceCents: 0n });
        expect(Math.abs(timestampDate(first.account!.openedAt!).getTime() - Date.now())).to.be.below(60_000);
        const second = await c.openAccount({ customerId, currency: "EUR" });
        expect(second.created).to.equal(false);
        expect(second.account).to.deep.equal(first.account);
        expect(await t.count("accounts", `customer_id = '${customerId}'`)).to.equal(1);
        expect((await c.getAccount({ customerId })).account).to.deep.equal(first.account);
      });

      it("tops up once per request id: a replay returns the same movement, applied=false, and moves nothing", async () => {
        const c = t.client(transport);
        const customerId = uniqueId("cust");
        await c.openAccount({ customerId, currency: "EUR" });
        const req = { customerId, amountCents: 2_500n, currency: "EUR", requestId: uniqueId("req") };
        const first = await c.topUp(req);
        expect(first.applied).to.equal(true);
        expect(first.account!.balanceCents).to.equal(2_500n);
        expect(first.movement).to.include({ kind: MovementKind.TOP_UP, amountCents: 2_500n, currency: "EUR", requestId: req.requestId, orderId: "" });
        const replay = await c.topUp(req);
        expect(replay.applied).to.equal(false);
        expect(replay.movement).to.deep.equal(first.movement);
        expect(replay.account!.balanceCents).to.equal(2_500n);
        expect((await c.getAccount({ customerId })).account!.balanceCents).to.equal(2_500n);
      });

      it("refuses a request id reused with another amount with ALREADY_EXISTS, and moves nothing", async () => {
        const c = t.client(transport);
        const customerId = uniqueId("cust");
        await c.openAccount({ customerId, currency: "EUR" });
        const requestId = uniqueId("req");
        await c.topUp({ customerId, amountCents: 1_000n, currency: "EUR", requestId });
        const err = await expectCode(c.topUp({ customerId, amountCents: 9_000n, currency: "EUR", requestId }), Code.AlreadyExists);
        expect(err.rawMessage).to.match(/top-up request .* was made before with other facts/);
        expect((await c.getAccount({ customerId })).account!.balanceCents).to.equal(1_000n);
      });

      it("answers NOT_FOUND for the account, top-up and statement of a customer without one", async () => {
        const c = t.client(transport);
        const customerId = uniqueId("nobody");
        await expectCode(c.getAccount({ customerId }), Code.NotFound);
        await expectCode(c.topUp({ customerId, amountCents: 1n, currency: "EUR", requestId: uniqueId("req") }), Code.NotFound);
        await expectCode(c.listStatement({ customerId }), Code.NotFound);
        expect(await t.count("inbox", `message_key LIKE 'topup:%' AND facts LIKE '%${customerId}%'`)).to.equal(0);
      });

      const invalid: Array<[string, () => Promise<unknown>, RegExp]> = [
        ["an empty customer_id", () => t.client(transport).openAccount({ customerId: "", currency: "EUR" }), /customer_id: value is required/],
        ["another currency", () => t.client(transport).openAccount({ customerId: "c-x", currency: "USD" }), /currency: must equal `EUR`/],
        ["a zero top-up", () => t.client(transport).topUp({ customerId: "c-x", amountCents: 0n, currency: "EUR", requestId: "r" }), /amount_cents: must be greater than 0/],
        ["a negative top-up", () => t.client(transport).topUp({ customerId: "c-x", amountCents: -5n, currency: "EUR", requestId: "r" }), /amount_cents: must be greater than 0/],
        ["a top-up without a request id", () => t.client(transport).topUp({ customerId: "c-x", amountCents: 5n, currency: "EUR", requestId: "" }), /request_id: value is required/],
        ["a malformed page token", () => t.client(transport).listStatement({ customerId: "c-x", pageToken: "not a token" }), /page_token: does not match regex pattern/],
      ];
      for (const [what, call, message] of invalid) {
        it(`refuses ${what} with INVALID_ARGUMENT and writes nothing`, async () => {
          const before = [await t.count("accounts"), await t.count("ledger_entries"), await t.count("inbox")];
          const err = await expectCode(call(), Code.InvalidArgument);
          expect(err.rawMessage).to.match(message);
          expect([await t.count("accounts"), await t.count("ledger_entries"), await t.count("inbox")]).to.deep.equal(before);
        });
      }

      it("lists a statement newest first, in pages that neither skip nor repeat a movement", async () => {
        const c = t.client(transport);
        const customerId = uniqueId("cust");
        await c.openAccount({ customerId, currency: "EUR" });
        for (let i = 1; i <= 7; i++) await c.topUp({ customerId, amountCents: BigInt(i * 100), currency: "EUR", requestId: `${customerId}-r${i}` });
        const seen: bigint[] = [];
        let pageToken = "";
        let pages = 0;
        do {
          const page = await c.listStatement({ customerId, pageSize: 3, pageToken });
          seen.push(...page.movements.map((m) => m.amountCents));
          pageToken = page.nextPageToken;
          pages++;
        } while (pageToken);
        expect(pages).to.equal(3);
        // ULIDs order by millisecond: amounts of one millisecond may come in either order, but all come once.
        expect([...seen].sort((a, b) => Number(a - b))).to.deep.equal([100n, 200n, 300n, 400n, 500n, 600n, 700n]);
        expect(seen[0]! >= seen[6]!).to.equal(true);
        await expectCode(c.listStatement({ customerId, pageToken: "QUJD" }), Code.InvalidArgument);
      });
    });
  }

  describe("access", () => {
    let alice: string;
    before(async () => {
      alice = uniqueId("alice");
      await t.client().openAccount({ customerId: alice, currency: "EUR" });
    });

    it("lets a customer read its own account and statement, and no one else's", async () => {
      const own = t.client("grpc", roleToken("customer", alice));
      expect((await own.getAccount({ customerId: alice })).account!.customerId).to.equal(alice);
      await own.listStatement({ customerId: alice });
      const other = t.client("connect", roleToken("customer", uniqueId("mallory")));
      const err = await expectCode(other.getAccount({ customerId: alice }), Code.PermissionDenied);
      expect(err.rawMessage).to.match(/may only read its own customer's data/);
      await expectCode(other.listStatement({ customerId: alice }), Code.PermissionDenied);
    });

    it("lets only the shop open accounts and top up, and only the relay charge and refund", async () => {
      const customer = t.client("grpc", roleToken("customer", alice));
      await expectCode(customer.topUp({ customerId: alice, amountCents: 100n, currency: "EUR", requestId: uniqueId("req") }), Code.PermissionDenied);
      await expectCode(customer.openAccount({ customerId: alice, currency: "EUR" }), Code.PermissionDenied);
      const shop = t.client("grpc", roleToken("shop"));
      await shop.topUp({ customerId: alice, amountCents: 100n, currency: "EUR", requestId: uniqueId("req") });
      await expectCode(shop.chargeOrder({ orderId: uniqueId("o"), customerId: alice, amountCents: 1n, currency: "EUR" }), Code.PermissionDenied);
      await expectCode(shop.refundOrder({ orderId: uniqueId("o") }), Code.PermissionDenied);
      const reconciler = t.client("grpc", roleToken("reconciler"));
      await reconciler.getAccount({ customerId: alice });
      await expectCode(reconciler.chargeOrder({ orderId: uniqueId("o"), customerId: alice, amountCents: 1n, currency: "EUR" }), Code.PermissionDenied);
      const relay = t.client("connect", roleToken("relay"));
      expect((await relay.chargeOrder({ orderId: uniqueId("o"), customerId: alice, amountCents: 1n, currency: "EUR" })).decided).to.equal(true);
      await expectCode(relay.topUp({ customerId: alice, amountCents: 100n, currency: "EUR", requestId: uniqueId("req") }), Code.PermissionDenied);
    });

    it("refuses a token addressed to another service, and a call without one, with UNAUTHENTICATED", async () => {
      const forVouchers = testToken({ subject: "x", scopes: [SCOPES.paymentsCharge], audience: AUDIENCES.vouchers, ttlSeconds: 600 });
      const err = await expectCode(t.client("grpc", forVouchers).getAccount({ customerId: alice }), Code.Unauthenticated);
      expect(err.rawMessage).to.match(/not this service \(payment-service\)/);
      const res = await fetch(`${t.httpUrl}/shop.payment.v1.PaymentService/GetAccount`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ customerId: alice }),
      });
      expect(res.status).to.equal(401);
    });

    it("serves health, readiness and its metrics on the HTTP port", async () => {
      expect((await fetch(`${t.httpUrl}/readyz`)).status).to.equal(200);
      const metrics = await (await fetch(`${t.httpUrl}/metrics`)).text();
      expect(metrics).to.match(/payment_requests_total\{call="top_up",result="applied"\} [1-9]/);
    });
  });
});
