import { expect } from "chai";
import { ConfigError } from "@shop/platform/config";
import { CarrierService, DeliveryService } from "@shop/sdk/delivery";
import { OrderService, PaymentOutcomeService, ShipmentEventService } from "@shop/sdk/order";
import { OrderAdminService } from "@shop/sdk/order-admin";
import { PaymentService } from "@shop/sdk/payment";
import { VoucherService } from "@shop/sdk/voucher";
import { DEFAULT_GATEWAY_GRPC_PORT, DEFAULT_GATEWAY_HTTP_PORT, loadGatewaySettings } from "../src/config.js";
import { DEFAULT_LIMITS, renderNginxConf, type GatewayConfig } from "../src/render.js";
import { EDGE_SERVICES, internalMethods, routedMethods, UPSTREAMS } from "../src/routes.js";

/** Every service the SDK has, with the upstream that serves it. */
const ALL_SERVICES = [
  { service: OrderService, upstream: "order" },
  { service: OrderAdminService, upstream: "order" },
  { service: PaymentOutcomeService, upstream: "order" },
  { service: ShipmentEventService, upstream: "order" },
  { service: VoucherService, upstream: "voucher" },
  { service: PaymentService, upstream: "payment" },
  { service: DeliveryService, upstream: "delivery" },
  { service: CarrierService, upstream: "delivery" },
] as const;

/** The RPCs only callers inside the system make (issue 14): none may be reachable from outside. */
const INTERNAL = [
  "shop.voucher.v1.VoucherService/IssueVoucher",
  "shop.voucher.v1.VoucherService/BatchIssueVouchers",
  "shop.voucher.v1.VoucherService/VoidVoucher",
  "shop.payment.v1.PaymentService/ChargeOrder",
  "shop.payment.v1.PaymentService/RefundOrder",
  "shop.order.v1.PaymentOutcomeService/RecordPaymentOutcome",
  "shop.order.v1.ShipmentEventService/RecordShipmentEvent",
  "shop.delivery.v1.DeliveryService/CreateShipment",
  "shop.delivery.v1.DeliveryService/ResumeShipment",
  "shop.order.v1.OrderAdminService/ListDeadVoucherDeliveries",
  "shop.order.v1.OrderAdminService/RequeueDeadVoucherDeliveries",
  "shop.order.v1.OrderService/RequeueVoucher",
  "shop.order.v1.OrderService/RequeuePayment",
  "shop.order.v1.OrderService/RequeueShipment",
];

/** What the shop backend, a customer and a carrier call: all of it must be routed. */
const EDGE_CALLS = [
  "shop.order.v1.OrderService/CreateOrder",
  "shop.order.v1.OrderService/GetOrder",
  "shop.order.v1.OrderService/ListOrders",
  "shop.order.v1.OrderService/MarkOrderSent",
  "shop.order.v1.OrderService/MarkOrderDelivered",
  "shop.order.v1.OrderService/CancelOrder",
  "shop.voucher.v1.VoucherService/GetVoucher",
  "shop.voucher.v1.VoucherService/ListVouchers",
  "shop.payment.v1.PaymentService/OpenAccount",
  "shop.payment.v1.PaymentService/GetAccount",
  "shop.payment.v1.PaymentService/TopUp",
  "shop.payment.v1.PaymentService/ListStatement",
  "shop.delivery.v1.DeliveryService/GetShipment",
  "shop.delivery.v1.DeliveryService/ListShipments",
  "shop.delivery.v1.CarrierService/ConfirmShipment",
  "shop.delivery.v1.CarrierService/MarkShipmentShipped",
  "shop.delivery.v1.CarrierService/MarkShipmentDelivered",
];

function config(over: Partial<GatewayConfig> = {}): GatewayConfig {
  const two = (base: number) => [
    { host: "10.0.0.1", port: base },
    { host: "10.0.0.2", port: base + 1 },
  ];
  return {
    host: "127.0.0.1",
    grpcPort: 50443,
    httpPort: 8443,
    limits: DEFAULT_LIMITS,
    workers: 2,
    upstreams: {
      order: { grpc: two(50051), http: two(8081) },
      voucher: { grpc: two(50061), http: two(8091) },
      payment: { grpc: two(50071), http: two(8101) },
      delivery: { grpc: two(50081), http: two(8111) },
    },
    paths: { njsDir: "/njs", pidFile: "/run/gw.pid", tempDir: "/tmp/gw", accessLog: "/var/log/gw.json", errorLog: "stderr" },
    ...over,
  };
}

/** The text of one server block: "grpc" or "connect", by the comment the renderer puts before it. */
function serverBlock(conf: string, which: "grpc" | "connect"): string {
  const grpcAt = conf.indexOf("# gRPC:");
  const connectAt = conf.indexOf("# Connect JSON:");
  expect(grpcAt, "the gRPC server's comment").to.be.greaterThan(-1);
  expect(connectAt, "the Connect server's comment").to.be.greaterThan(grpcAt);
  return which === "grpc" ? conf.slice(grpcAt, connectAt) : conf.slice(connectAt);
}

function count(text: string, needle: string): number {
  return text.split(needle).length - 1;
}

describe("gateway routes", () => {
  it("classify every method of every service, and only those", () => {
    expect(EDGE_SERVICES.map((s) => [s.typeName, s.upstream])).to.deep.equal(ALL_SERVICES.map((s) => [s.service.typeName, s.upstream]));
    const every = ALL_SERVICES.flatMap(({ service }) => Object.values(service.method).map((m) => `${service.typeName}/${m.name}`));
    const routed = routedMethods();
    const internal = internalMethods();
    expect([...routed, ...internal].sort()).to.deep.equal([...every].sort());
    expect(routed.filter((m) => internal.includes(m)), "both routed and internal").to.deep.equal([]);
  });

  it("keep the internal RPCs inside and route what the shop, customers and carriers call", () => {
    expect(internalMethods().sort()).to.deep.equal([...INTERNAL].sort());
    expect(routedMethods()).to.include.members(EDGE_CALLS);
  });
});

describe("renderNginxConf", () => {
  const conf = renderNginxConf(config());

  it("has one location per routed service on each server, none for a service with nothing routed", () => {
    for (const which of ["grpc", "connect"] as const) {
      const block = serverBlock(conf, which);
      for (const s of EDGE_SERVICES) {
        const routed = s.methods.some((m) => m.routed);
        expect(count(block, `location /${s.typeName}/ {`), `${which}: ${s.typeName}`).to.equal(routed ? 1 : 0);
      }
      // OrderAdminService, PaymentOutcomeService and ShipmentEventService have nothing for outside callers.
      expect(count(block, "location /")).to.equal(EDGE_SERVICES.filter((s) => s.methods.some((m) => m.routed)).length + 1);
    }
  });

  it("passes each service's prefix to its own upstream with the protocol's directive", () => {
    const grpc = serverBlock(conf, "grpc");
    const connect = serverBlock(conf, "connect");
    for (const s of EDGE_SERVICES.filter((e) => e.methods.some((m) => m.routed))) {
      const grpcLocation = grpc.slice(grpc.indexOf(`location /${s.typeName}/ {`)).split("\n    }")[0]!;
      expect(grpcLocation).to.include(`grpc_pass grpc://${s.upstream}_grpc;`);
      expect(grpcLocation).to.include("limit_req zone=per_caller");
      expect(grpcLocation).to.include("$http_authorization");
      const connectLocation = connect.slice(connect.indexOf(`location /${s.typeName}/ {`)).split("\n    }")[0]!;
      expect(connectLocation).to.include(`proxy_pass http://${s.upstream}_http;`);
    }
  });

  it("refuses each internal method of a routed service by its exact path, and routes no internal method", () => {
    for (const which of ["grpc", "connect"] as const) {
      const block = serverBlock(conf, which);
      for (const s of EDGE_SERVICES) {
        const routed = s.methods.some((m) => m.routed);
        for (const m of s.methods.filter((x) => !x.routed)) {
          // A service with routed methods: an exact location answering 404 (then "unimplemented");
          // a service with none: no location at all, so the catch-all answers 404.
          expect(count(block, `location = /${s.typeName}/${m.name} { return 404; }`), `${which}: ${s.typeName}/${m.name}`).to.equal(routed ? 1 : 0);
        }
        for (const m of s.methods.filter((x) => x.routed)) {
          expect(block, `${which}: ${s.typeName}/${m.name}`).to.not.include(`location = /${s.typeName}/${m.name} `);
        }
      }
      expect(block).to.include("location / { return 404; }");
      expect(block).to.include("error_page 404 = @unimplemented;");
      expect(block).to.include("error_page 429 = @rate_limited;");
      expect(block).to.include("error_page 413 = @too_large;");
    }
    expect(serverBlock(conf, "grpc")).to.match(/location @unimplemented \{[^}]*grpc-status 12 always;/);
    expect(serverBlock(conf, "grpc")).to.match(/location @rate_limited \{[^}]*grpc-status 8 always;/);
    expect(serverBlock(conf, "connect")).to.match(/location @rate_limited \{[^}]*return 429 '\{"code":"resource_exhausted"/);
    expect(serverBlock(conf, "connect")).to.match(/location @unimplemented \{[^}]*return 404 '\{"code":"unimplemented"/);
  });

  it("lists every replica as a server line of its upstream", () => {
    const c = config();
    for (const u of UPSTREAMS) {
      for (const protocol of ["grpc", "http"] as const) {
        const block = conf.slice(conf.indexOf(`upstream ${u}_${protocol} {`)).split("\n  }")[0]!;
        const servers = block.split("\n").filter((l) => l.trim().startsWith("server "));
        expect(servers, `${u}_${protocol}`).to.deep.equal(
          c.upstreams[u][protocol].map((e) => `    server ${e.host}:${e.port} max_fails=1 fail_timeout=10s;`),
        );
      }
    }
  });

  it("puts the limits and timeouts in", () => {
    const limits = { ...DEFAULT_LIMITS, ratePerCaller: 5, burstPerCaller: 7, maxRequestBytes: 4096, upstreamTimeoutMs: 1500, maxFails: 3, failTimeoutSeconds: 4 };
    const text = renderNginxConf(config({ limits }));
    expect(text).to.include("zone=per_caller:10m rate=5r/s;");
    expect(text).to.include("limit_req zone=per_caller burst=7 nodelay;");
    expect(count(text, "client_max_body_size 4096;")).to.equal(2);
    expect(text).to.include("grpc_read_timeout 1500ms;");
    expect(text).to.include("proxy_read_timeout 1500ms;");
    expect(text).to.include("max_fails=3 fail_timeout=4s;");
  });

  it("has TLS lines only with tls, and plaintext listeners without", () => {
    expect(conf).to.not.include("ssl_certificate");
    expect(conf).to.include("listen 127.0.0.1:50443 http2;");
    expect(conf).to.include("listen 127.0.0.1:8443;");
    const tls = renderNginxConf(config({ tls: { certFile: "/tls/server.crt", keyFile: "/tls/server.key" } }));
    for (const which of ["grpc", "connect"] as const) {
      const block = serverBlock(tls, which);
      expect(block).to.include("ssl_certificate /tls/server.crt;");
      expect(block).to.include("ssl_certificate_key /tls/server.key;");
    }
    expect(tls).to.include("listen 127.0.0.1:50443 ssl http2;");
    expect(tls).to.include("listen 127.0.0.1:8443 ssl http2;");
    // TLS at the edge only: the replicas are still reached in plaintext.
    expect(tls).to.include("grpc_pass grpc://");
    expect(tls).to.not.include("grpc_ssl_");
  });

  it("reaches the replicas with grpcs:// and https:// with upstreamTls, presenting a certificate only when given one", () => {
    const verify = renderNginxConf(config({ upstreamTls: { caFile: "/tls/ca.crt" } }));
    expect(verify).to.include("grpc_pass grpcs://order_grpc;");
    expect(verify).to.include("proxy_pass https://order_http;");
    expect(verify).to.not.include("grpc_pass grpc://");
    expect(verify).to.not.include("proxy_pass http://");
    expect(verify).to.include("grpc_ssl_trusted_certificate /tls/ca.crt;");
    expect(verify).to.include("proxy_ssl_trusted_certificate /tls/ca.crt;");
    expect(verify).to.include("grpc_ssl_verify on;");
    expect(verify).to.include("proxy_ssl_verify on;");
    expect(verify).to.not.include("grpc_ssl_certificate ");
    const mutual = renderNginxConf(config({ upstreamTls: { caFile: "/tls/ca.crt", certFile: "/tls/gw.crt", keyFile: "/tls/gw.key" } }));
    expect(mutual).to.include("grpc_ssl_certificate /tls/gw.crt;");
    expect(mutual).to.include("grpc_ssl_certificate_key /tls/gw.key;");
    expect(mutual).to.include("proxy_ssl_certificate /tls/gw.crt;");
    expect(mutual).to.include("proxy_ssl_certificate_key /tls/gw.key;");
    // The name checked is the service's host (nginx would otherwise check the upstream group's name), or the one given.
    const orderHost = config().upstreams.order.grpc[0]!.host;
    expect(verify).to.include(`grpc_ssl_name ${orderHost};`);
    expect(verify).to.not.include("_ssl_name order_grpc;");
    const named = renderNginxConf(config({ upstreamTls: { caFile: "/tls/ca.crt", serverName: "services.shop.internal" } }));
    expect(named.match(/grpc_ssl_name services\.shop\.internal;/g)?.length).to.be.greaterThan(0);
    expect(named).to.not.include(`grpc_ssl_name ${orderHost};`);
    expect(conf).to.not.include("_ssl_name");
  });

  it("loads the njs module only when given its path, and sets the user only when given one", () => {
    expect(conf).to.not.include("load_module");
    expect(conf).to.not.match(/^user /m);
    const c = config();
    const text = renderNginxConf({ ...c, user: "nginx", paths: { ...c.paths, njsModule: "/mods/njs.so" } });
    expect(text).to.match(/^load_module \/mods\/njs\.so;$/m);
    expect(text).to.match(/^user nginx;$/m);
  });

  it("refuses limits nginx cannot take and an upstream without replicas", () => {
    expect(() => renderNginxConf(config({ limits: { ...DEFAULT_LIMITS, ratePerCaller: 0 } }))).to.throw(/at least 1 request a second/);
    expect(() => renderNginxConf(config({ limits: { ...DEFAULT_LIMITS, ratePerAddress: 0 } }))).to.throw(/at least 1 request a second/);
    expect(() => renderNginxConf(config({ limits: { ...DEFAULT_LIMITS, burstPerCaller: -1 } }))).to.throw(/burstPerCaller must be a whole number/);
    expect(() => renderNginxConf(config({ limits: { ...DEFAULT_LIMITS, upstreamTimeoutMs: 1.5 } }))).to.throw(/upstreamTimeoutMs must be a whole number/);
    const c = config();
    expect(() => renderNginxConf({ ...c, upstreams: { ...c.upstreams, voucher: { grpc: [], http: c.upstreams.voucher.http } } })).to.throw(
      /upstream voucher_grpc has no replicas/,
    );
  });
});

/** The ConfigError's message for these settings; fails when they load. */
function problems(env: NodeJS.ProcessEnv): string {
  try {
    loadGatewaySettings(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("gateway settings (GATEWAY_*)", () => {
  it("have defaults for everything", () => {
    expect(loadGatewaySettings({})).to.deep.equal({
      host: "127.0.0.1",
      grpcPort: DEFAULT_GATEWAY_GRPC_PORT,
      httpPort: DEFAULT_GATEWAY_HTTP_PORT,
      tls: undefined,
      upstreamTls: undefined,
      limits: DEFAULT_LIMITS,
      workers: "auto",
    });
  });

  it("take the target's defaults, and the environment over them", () => {
    const defaults = { host: "0.0.0.0", tls: { certFile: "/a.crt", keyFile: "/a.key" }, workers: 4 };
    expect(loadGatewaySettings({}, defaults)).to.include({ host: "0.0.0.0", workers: 4 });
    expect(loadGatewaySettings({}, defaults).tls).to.deep.equal(defaults.tls);
    const s = loadGatewaySettings(
      {
        GATEWAY_HOST: "10.1.1.1",
        GATEWAY_GRPC_PORT: "6000",
        GATEWAY_HTTP_PORT: "6001",
        GATEWAY_TLS_CERT_FILE: "/b.crt",
        GATEWAY_TLS_KEY_FILE: "/b.key",
        GATEWAY_UPSTREAM_TLS_CA_FILE: "/ca.crt",
        GATEWAY_UPSTREAM_TLS_CERT_FILE: "/gw.crt",
        GATEWAY_UPSTREAM_TLS_KEY_FILE: "/gw.key",
        GATEWAY_UPSTREAM_TLS_SERVER_NAME: "services.shop.internal",
        GATEWAY_RATE_PER_CALLER: "5",
        GATEWAY_BURST_PER_CALLER: "0",
        GATEWAY_MAX_REQUEST_BYTES: "4096",
        GATEWAY_WORKERS: "3",
      },
      defaults,
    );
    expect(s).to.deep.equal({
      host: "10.1.1.1",
      grpcPort: 6000,
      httpPort: 6001,
      tls: { certFile: "/b.crt", keyFile: "/b.key" },
      upstreamTls: { caFile: "/ca.crt", certFile: "/gw.crt", keyFile: "/gw.key", serverName: "services.shop.internal" },
      limits: { ...DEFAULT_LIMITS, ratePerCaller: 5, burstPerCaller: 0, maxRequestBytes: 4096 },
      workers: 3,
    });
  });

  it("name a certificate without its key, and a key without its certificate", () => {
    expect(problems({ GATEWAY_TLS_CERT_FILE: "/b.crt" })).to.include("GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE go together");
    expect(problems({ GATEWAY_TLS_KEY_FILE: "/b.key" })).to.include("GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE go together");
    expect(problems({ GATEWAY_UPSTREAM_TLS_CA_FILE: "/ca", GATEWAY_UPSTREAM_TLS_CERT_FILE: "/gw.crt" })).to.include(
      "GATEWAY_UPSTREAM_TLS_CERT_FILE and GATEWAY_UPSTREAM_TLS_KEY_FILE go together",
    );
    expect(problems({ GATEWAY_UPSTREAM_TLS_CERT_FILE: "/gw.crt", GATEWAY_UPSTREAM_TLS_KEY_FILE: "/gw.key" })).to.include(
      "GATEWAY_UPSTREAM_TLS_CERT_FILE needs GATEWAY_UPSTREAM_TLS_CA_FILE",
    );
  });

  it("name bad worker counts", () => {
    for (const bad of ["0", "257", "two", "1.5", "-1"]) {
      expect(problems({ GATEWAY_WORKERS: bad }), bad).to.include(`GATEWAY_WORKERS=${JSON.stringify(bad)} is not "auto" or 1-256`);
    }
    expect(loadGatewaySettings({ GATEWAY_WORKERS: "auto" }).workers).to.equal("auto");
    expect(loadGatewaySettings({ GATEWAY_WORKERS: "256" }).workers).to.equal(256);
  });

  it("name one port for both servers", () => {
    expect(problems({ GATEWAY_GRPC_PORT: "7000", GATEWAY_HTTP_PORT: "7000" })).to.include("GATEWAY_GRPC_PORT and GATEWAY_HTTP_PORT are both 7000");
  });

  it("name every setting out of range or not a number, all at once", () => {
    const message = problems({
      GATEWAY_GRPC_PORT: "70000",
      GATEWAY_RATE_PER_CALLER: "0",
      GATEWAY_BURST_PER_ADDRESS: "-1",
      GATEWAY_MAX_REQUEST_BYTES: "100",
      GATEWAY_CONNECT_TIMEOUT_MS: "fast",
      GATEWAY_FAIL_TIMEOUT_SECONDS: "0",
    });
    expect(message).to.include("GATEWAY_GRPC_PORT=70000 is out of range [0, 65535]");
    expect(message).to.include("GATEWAY_RATE_PER_CALLER=0 is out of range [1, 1000000]");
    expect(message).to.include("GATEWAY_BURST_PER_ADDRESS=-1 is out of range [0, 1000000]");
    expect(message).to.include("GATEWAY_MAX_REQUEST_BYTES=100 is out of range [1024, 16777216]");
    expect(message).to.include('GATEWAY_CONNECT_TIMEOUT_MS="fast" is not a whole number');
    expect(message).to.include("GATEWAY_FAIL_TIMEOUT_SECONDS=0 is out of range [1, 3600]");
  });
});
