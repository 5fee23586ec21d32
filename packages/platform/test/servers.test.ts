import { Code, ConnectError, createClient, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { expect } from "chai";
import { pino } from "pino";
import { callerKey, SCOPES } from "@shop/platform/auth";
import { createMetrics } from "@shop/platform/metrics";
import { startServers, type RunningServers } from "@shop/platform/servers";
import { OrderService } from "@shop/sdk/order";
import { allScopesToken, roleToken, testAuth } from "@shop/testkit/auth";

/**
 * The servers' one stack of interceptors (tracing, metrics and logging,
 * authentication, validation), on both transports: handlers now rely on it
 * instead of checking requests themselves, so a handler must never see a
 * request its proto's rules refuse, nor one from a caller not let in, on
 * either port; and both ports must answer and count a call alike.
 */
describe("the servers' interceptors, on both transports", function () {
  this.timeout(30_000);
  const seen: Array<{ orderId: string; caller: string | undefined }> = [];
  const metrics = createMetrics();
  let servers: RunningServers;
  const sessions: Http2SessionManager[] = [];

  before(async () => {
    servers = await startServers({
      host: "127.0.0.1",
      grpcPort: 0,
      httpPort: 0,
      auth: testAuth,
      logger: pino({ level: "silent" }),
      metrics,
      isReady: async () => true,
      services: [
        {
          service: OrderService,
          // Only GetOrder is served: it records what reached it.
          impl: {
            getOrder: (req: { orderId: string }, ctx: HandlerContext) => {
              seen.push({ orderId: req.orderId, caller: ctx.values.get(callerKey)?.principal.subject });
              return { order: { id: req.orderId, customerId: "c-1", currency: "EUR" } };
            },
          },
          access: { getOrder: { scopes: [SCOPES.ordersRead] } },
        },
      ],
    });
  });

  after(async () => {
    sessions.forEach((s) => s.abort());
    await servers?.close(500);
  });

  function clients(token: string | undefined) {
    const auth: Interceptor = (next) => (req) => {
      if (token !== undefined) req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    };
    const grpcUrl = `http://127.0.0.1:${servers.grpcPort}`;
    const sessionManager = new Http2SessionManager(grpcUrl);
    sessions.push(sessionManager);
    return {
      grpc: createClient(OrderService, createGrpcTransport({ baseUrl: grpcUrl, sessionManager, interceptors: [auth] })),
      connect: createClient(
        OrderService,
        createConnectTransport({ baseUrl: `http://127.0.0.1:${servers.httpPort}`, httpVersion: "1.1", useBinaryFormat: false, interceptors: [auth] }),
      ),
    };
  }

  async function statusOf(call: Promise<unknown>): Promise<{ code: string; message: string }> {
    try {
      await call;
      return { code: "OK", message: "" };
    } catch (err) {
      const ce = ConnectError.from(err);
      return { code: Code[ce.code], message: ce.rawMessage };
    }
  }

  async function handled(code: string): Promise<number> {
    const values = (await metrics.registry.getSingleMetric("rpc_server_handled_total")!.get()).values;
    return values.find((v) => v.labels.method === "GetOrder" && v.labels.code === code)?.value ?? 0;
  }

  it("hands a valid request from a caller let in to the handler once per call, with the caller", async () => {
    seen.length = 0;
    const { grpc, connect } = clients(allScopesToken);
    expect((await grpc.getOrder({ orderId: "o-grpc" })).order?.id).to.equal("o-grpc");
    expect((await connect.getOrder({ orderId: "o-connect" })).order?.id).to.equal("o-connect");
    expect(seen).to.deep.equal([
      { orderId: "o-grpc", caller: "test-harness" },
      { orderId: "o-connect", caller: "test-harness" },
    ]);
  });

  it("never hands the handler a request its proto's rules refuse, and both transports answer it alike and count it once", async () => {
    seen.length = 0;
    const { grpc, connect } = clients(allScopesToken);
    for (const orderId of ["", "a b", "x".repeat(65)]) {
      const before = await handled("INVALID_ARGUMENT");
      const overGrpc = await statusOf(grpc.getOrder({ orderId }));
      const overConnect = await statusOf(connect.getOrder({ orderId }));
      expect(overGrpc.code, overGrpc.message).to.equal("InvalidArgument");
      expect(overGrpc.message).to.match(/^invalid GetOrderRequest: order_id: /);
      expect(overConnect).to.deep.equal(overGrpc);
      expect(await handled("INVALID_ARGUMENT")).to.equal(before + 2);
    }
    expect(seen).to.deep.equal([]);
  });

  it("checks the caller before the request: without a token, or without the scope, the request is not even judged", async () => {
    seen.length = 0;
    const anonymous = clients(undefined);
    const relay = clients(roleToken("relay"));
    for (const c of [anonymous.grpc, anonymous.connect]) {
      expect((await statusOf(c.getOrder({ orderId: "a b" }))).code).to.equal("Unauthenticated");
    }
    for (const c of [relay.grpc, relay.connect]) {
      expect((await statusOf(c.getOrder({ orderId: "a b" }))).code).to.equal("PermissionDenied");
    }
    expect(seen).to.deep.equal([]);
  });

  it("answers a method the binding does not implement as UNIMPLEMENTED on both transports", async () => {
    const { grpc, connect } = clients(allScopesToken);
    expect((await statusOf(grpc.markOrderSent({ orderId: "o-1" }))).code).to.equal("Unimplemented");
    expect((await statusOf(connect.markOrderSent({ orderId: "o-1" }))).code).to.equal("Unimplemented");
  });
});
