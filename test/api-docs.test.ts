import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { Validator as OpenApiValidator } from "@seriousme/openapi-schema-validator";
import { Ajv2020 } from "ajv/dist/2020.js";
import { createFileRegistry, fromBinary, fromJson, type DescMessage, type DescService, type JsonValue } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { createValidator } from "@bufbuild/protovalidate";
import { openApiDocuments } from "@shop/platform/gen/openapi";
import { createOrderClient } from "@shop/sdk/clients";
import { allScopesToken, roleToken } from "@shop/testkit/auth";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";

const root = path.resolve(import.meta.dirname, "..");
const docsDir = path.join(root, "docs/api");

interface OpenApi {
  openapi: string;
  info: { title: string };
  servers?: Array<{ url: string }>;
  paths: Record<string, { post: { operationId: string; requestBody: { content: { "application/json": { schema: { $ref: string }; example: JsonValue } } } } }>;
  components: { schemas: Record<string, { properties?: Record<string, unknown> }>; securitySchemes: Record<string, { type: string; scheme: string }> };
  security: Array<Record<string, string[]>>;
}

interface PostmanItem {
  name: string;
  request: { method: string; url: { raw: string }; header: Array<{ key: string; value: string }>; body: { raw: string } };
}
interface Postman {
  info: { schema: string };
  item: Array<{ name: string; auth: { type: string; bearer: Array<{ key: string; value: string }> }; item: PostmanItem[] }>;
  variable: Array<{ key: string; value: string }>;
}

/** The services of proto/ as buf compiles them, independently of the generator under test. */
function protoServices(): DescService[] {
  const dir = mkdtempSync(path.join(tmpdir(), "shop-protos-"));
  try {
    const image = path.join(dir, "image.binpb");
    execFileSync(path.join(root, "node_modules/.bin/buf"), ["build", "--path", "proto/shop", "-o", image], { cwd: root, stdio: "pipe" });
    const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(image)));
    const services: DescService[] = [];
    for (const file of registry.files) if (file.proto.package.startsWith("shop.")) services.push(...file.services);
    return services;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function readJson<T>(file: string): T {
  return JSON.parse(readFileSync(file, "utf8")) as T;
}

/**
 * Whether the document is valid OpenAPI (its own meta-schema) and each
 * example request body is valid against the document's JSON Schema for it.
 */
async function expectValidOpenApi(doc: OpenApi, what: string): Promise<void> {
  const result = await new OpenApiValidator().validate(structuredClone(doc) as never);
  expect(result.valid, `${what}: ${JSON.stringify(result.errors)}`).to.equal(true);
  // The document as one schema whose $refs resolve inside it; formats such as int64 are notes, not checks.
  const ajv = new Ajv2020({ strict: false, validateFormats: false, allErrors: true });
  ajv.addSchema({ $id: "doc", $defs: {}, ...structuredClone(doc) } as never);
  for (const [p, item] of Object.entries(doc.paths)) {
    const body = item.post.requestBody.content["application/json"];
    const validate = ajv.compile({ $ref: `doc${body.schema.$ref}` });
    expect(validate(body.example), `${what} ${p}: example against its schema: ${ajv.errorsText(validate.errors)}`).to.equal(true);
  }
}

/** A Postman request's body with its variables filled in, as Postman would send it. */
function postmanBody(item: PostmanItem): JsonValue {
  return JSON.parse(item.request.body.raw.replace(/\{\{\$guid\}\}/g, () => randomUUID())) as JsonValue;
}

describe("API documents (OpenAPI and Postman, generated from the protos)", () => {
  const services = protoServices();
  const collection = readJson<Postman>(path.join(docsDir, "shop.postman_collection.json"));
  const validator = createValidator();

  /** Whether protovalidate accepts the example as the request message (the rules the services check first). */
  function expectValidExample(input: DescMessage, example: JsonValue, what: string): void {
    const result = validator.validate(input, fromJson(input, example));
    expect(result.kind, `${what}: ${result.kind === "invalid" ? result.error.message : ""}`).to.equal("valid");
  }

  it("finds the services of proto/ (the check below is not vacuous)", () => {
    expect(services.map((s) => s.typeName)).to.include.members([
      "shop.order.v1.OrderService",
      "shop.order.v1.OrderAdminService",
      "shop.order.v1.PaymentOutcomeService",
      "shop.voucher.v1.VoucherService",
      "shop.payment.v1.PaymentService",
      "shop.order.v1.ShipmentEventService",
      "shop.delivery.v1.DeliveryService",
      "shop.delivery.v1.CarrierService",
    ]);
  });

  it("has a document per service, in docs/api and in the platform's module alike, naming every RPC with its request's fields, valid OpenAPI 3.1 with examples valid by schema and by the request rules", async () => {
    const files = readdirSync(docsDir).filter((f) => f.endsWith(".openapi.json"));
    expect(files.sort()).to.deep.equal(services.map((s) => `${s.typeName}.openapi.json`).sort());
    for (const service of services) {
      const doc = readJson<OpenApi>(path.join(docsDir, `${service.typeName}.openapi.json`));
      // The same document, but for the files' servers entry (the served one's server is its origin).
      const { servers, ...served } = doc;
      expect(servers, service.typeName).to.have.length(1);
      expect(openApiDocuments[service.typeName], service.typeName).to.deep.equal(served);
      expect(doc.openapi).to.equal("3.1.0");
      await expectValidOpenApi(doc, service.typeName);
      expect(doc.components.securitySchemes.bearerAuth).to.include({ type: "http", scheme: "bearer" });
      expect(doc.security).to.deep.equal([{ bearerAuth: [] }]);
      expect(Object.keys(doc.paths).sort()).to.deep.equal(service.methods.map((m) => `/${service.typeName}/${m.name}`).sort());
      for (const method of service.methods) {
        const op = doc.paths[`/${service.typeName}/${method.name}`]!.post;
        const body = op.requestBody.content["application/json"];
        expect(body.schema.$ref).to.equal(`#/components/schemas/${method.input.typeName}`);
        const properties = doc.components.schemas[method.input.typeName]!.properties ?? {};
        expect(Object.keys(properties), method.input.typeName).to.deep.equal(method.input.fields.map((f) => f.jsonName));
        expectValidExample(method.input, body.example, `OpenAPI example of ${method.name}`);
      }
    }
  });

  it("has a Postman folder per service and a request per RPC, with bearer auth and an example the request rules accept", () => {
    expect(collection.info.schema).to.equal("https://schema.getpostman.com/json/collection/v2.1.0/collection.json");
    expect(collection.item.map((f) => f.name).sort()).to.deep.equal(services.map((s) => s.typeName).sort());
    const variables = new Set(collection.variable.map((v) => v.key));
    for (const service of services) {
      const folder = collection.item.find((f) => f.name === service.typeName)!;
      expect(folder.auth.type).to.equal("bearer");
      const token = /^\{\{(\w+)\}\}$/.exec(folder.auth.bearer[0]!.value)?.[1];
      expect(variables.has(token!), `${service.typeName}: token variable ${token}`).to.equal(true);
      expect(folder.item.map((i) => i.name)).to.deep.equal(service.methods.map((m) => m.name));
      for (const method of service.methods) {
        const item = folder.item.find((i) => i.name === method.name)!;
        expect(item.request.method).to.equal("POST");
        const url = /^\{\{(\w+)\}\}(\/.*)$/.exec(item.request.url.raw);
        expect(variables.has(url![1]!), `${method.name}: base URL variable ${url![1]}`).to.equal(true);
        expect(url![2]).to.equal(`/${service.typeName}/${method.name}`);
        expect(item.request.header).to.deep.include({ key: "Content-Type", value: "application/json" });
        expectValidExample(method.input, postmanBody(item), `Postman example of ${method.name}`);
      }
    }
  });

  describe("served by the running services", function () {
    this.timeout(120_000);
    let databases: TestDatabase[] = [];
    let order: ServiceProcess;
    let voucher: ServiceProcess;
    let payment: ServiceProcess;
    let delivery: ServiceProcess;
    const ports = { og: 0, oh: 0, vg: 0, vh: 0, pg: 0, ph: 0, dg: 0, dh: 0 };
    const httpOrigin = (p: ServiceProcess) => new URL(p.opts.readyUrl!).origin;

    before(async () => {
      databases = await Promise.all([freshDatabase("order"), freshDatabase("voucher"), freshDatabase("voucher"), freshDatabase("order")]);
      const [orderDb, voucherDb, paymentDb, deliveryDb] = databases;
      [ports.og, ports.oh, ports.vg, ports.vh, ports.pg, ports.ph, ports.dg, ports.dh] = await Promise.all(Array.from({ length: 8 }, () => freePort()));
      order = new ServiceProcess({
        name: "api-docs-order",
        entry: path.join(root, "order-service/src/main.ts"),
        env: {
          ORDER_DATABASE_URL: orderDb!.url,
          ORDER_GRPC_PORT: String(ports.og),
          ORDER_HTTP_PORT: String(ports.oh),
          VOUCHER_SERVICE_URL: `http://127.0.0.1:${ports.vg}`,
          PAYMENT_SERVICE_URL: `http://127.0.0.1:${ports.pg}`,
        },
        readyUrl: `http://127.0.0.1:${ports.oh}/readyz`,
      });
      voucher = new ServiceProcess({
        name: "api-docs-voucher",
        entry: path.join(root, "voucher-service/src/main.ts"),
        env: { VOUCHER_DATABASE_URL: voucherDb!.url, VOUCHER_GRPC_PORT: String(ports.vg), VOUCHER_HTTP_PORT: String(ports.vh) },
        readyUrl: `http://127.0.0.1:${ports.vh}/readyz`,
      });
      payment = new ServiceProcess({
        name: "api-docs-payment",
        entry: path.join(root, "payment-service/src/main.ts"),
        env: {
          PAYMENT_DATABASE_URL: paymentDb!.url,
          PAYMENT_GRPC_PORT: String(ports.pg),
          PAYMENT_HTTP_PORT: String(ports.ph),
          ORDER_SERVICE_URL: `http://127.0.0.1:${ports.og}`,
          PAYMENT_RELAY_TOKEN: roleToken("payment-relay"),
        },
        readyUrl: `http://127.0.0.1:${ports.ph}/readyz`,
      });
      delivery = new ServiceProcess({
        name: "api-docs-delivery",
        entry: path.join(root, "delivery-service/src/main.ts"),
        env: {
          DELIVERY_DATABASE_URL: deliveryDb!.url,
          DELIVERY_GRPC_PORT: String(ports.dg),
          DELIVERY_HTTP_PORT: String(ports.dh),
          ORDER_SERVICE_URL: `http://127.0.0.1:${ports.og}`,
          DELIVERY_RELAY_TOKEN: roleToken("delivery-relay"),
        },
        readyUrl: `http://127.0.0.1:${ports.dh}/readyz`,
      });
      await Promise.all([order.start(), voucher.start(), payment.start(), delivery.start()]);
    });

    after(async () => {
      await Promise.all([order?.stop(), voucher?.stop(), payment?.stop(), delivery?.stop()]);
      await Promise.all(databases.map((d) => d.drop()));
    });

    it("answer GET /openapi.json without a token: one document per port, naming every method the port serves", async () => {
      const ports = [
        {
          process: order,
          services: ["shop.order.v1.OrderService", "shop.order.v1.OrderAdminService", "shop.order.v1.PaymentOutcomeService", "shop.order.v1.ShipmentEventService"],
        },
        { process: voucher, services: ["shop.voucher.v1.VoucherService"] },
        { process: payment, services: ["shop.payment.v1.PaymentService"] },
        { process: delivery, services: ["shop.delivery.v1.DeliveryService", "shop.delivery.v1.CarrierService"] },
      ];
      for (const { process: p, services: hosted } of ports) {
        const res = await fetch(`${httpOrigin(p)}/openapi.json`);
        expect(res.status, p.opts.name).to.equal(200);
        expect(res.headers.get("content-type")).to.match(/^application\/json/);
        const doc = (await res.json()) as OpenApi;
        expect(doc.openapi).to.equal("3.1.0");
        await expectValidOpenApi(doc, p.opts.name);
        const expected = services.filter((s) => hosted.includes(s.typeName)).flatMap((s) => s.methods.map((m) => `/${s.typeName}/${m.name}`));
        expect(expected.length).to.be.greaterThan(0);
        expect(Object.keys(doc.paths).sort(), p.opts.name).to.deep.equal(expected.sort());
        for (const [p2, item] of Object.entries(doc.paths)) expect(item.post.operationId).to.equal(p2.slice(1).replace("/", "."));
        for (const ref of JSON.stringify(doc).matchAll(/"\$ref":"#\/components\/(\w+)\/([^"]+)"/g)) {
          expect((doc.components as unknown as Record<string, Record<string, unknown>>)[ref[1]!]?.[ref[2]!], `${p.opts.name}: ${ref[0]}`).to.not.equal(undefined);
        }
      }
    });

    it("answer GET /docs with Swagger UI's page, its assets and settings from the same origin", async () => {
      const origin = httpOrigin(order);
      const page = await fetch(`${origin}/docs`);
      expect(page.status).to.equal(200);
      expect(page.headers.get("content-type")).to.match(/^text\/html/);
      const html = await page.text();
      const assets = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
      expect(assets).to.include.members(["/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js", "/docs/init.js"]);
      for (const asset of assets) {
        expect(asset, "served from this origin, no CDN").to.match(/^\/docs\//);
        const res = await fetch(`${origin}${asset}`);
        expect(res.status, asset).to.equal(200);
        expect((await res.arrayBuffer()).byteLength, asset).to.be.greaterThan(0);
      }
      const bundle = await (await fetch(`${origin}/docs/swagger-ui-bundle.js`)).text();
      expect(bundle).to.include("SwaggerUIBundle");
      const init = await (await fetch(`${origin}/docs/init.js`)).text();
      expect(init).to.include('url: "/openapi.json"');
      const missing = await fetch(`${origin}/docs/../package.json`);
      expect(missing.status).to.not.equal(200);
    });

    it("answer the Postman collection's CreateOrder request, sent as Postman sends it, with the order", async () => {
      const folder = collection.item.find((f) => f.name === "shop.order.v1.OrderService")!;
      const item = folder.item.find((i) => i.name === "CreateOrder")!;
      const vars: Record<string, string> = {
        ...Object.fromEntries(collection.variable.map((v) => [v.key, v.value])),
        orderServiceBaseUrl: httpOrigin(order),
        orderServiceToken: allScopesToken,
      };
      const fill = (s: string) => s.replace(/\{\{(\w+)\}\}/g, (_, k: string) => vars[k] ?? `{{${k}}}`);
      const headers = new Headers(item.request.header.map((h) => [h.key, fill(h.value)] as [string, string]));
      headers.set("authorization", `Bearer ${fill(folder.auth.bearer[0]!.value)}`);
      const body = JSON.stringify(postmanBody(item));
      const res = await fetch(fill(item.request.url.raw), { method: item.request.method, headers, body });
      const answer = (await res.json()) as { order?: { id: string; customerId: string; totalCents: string; status: string }; created?: boolean };
      expect(res.status, JSON.stringify(answer)).to.equal(200);
      const sent = JSON.parse(body) as { customerId: string; totalCents: string };
      expect(answer.created).to.equal(true);
      expect(answer.order).to.include({ customerId: sent.customerId, totalCents: sent.totalCents, status: "ORDER_STATUS_PENDING" });
      const orders = createOrderClient({ baseUrl: `http://127.0.0.1:${ports.og}`, token: allScopesToken });
      try {
        const stored = await orders.client.getOrder({ orderId: answer.order!.id });
        expect(stored.order?.customerId).to.equal(sent.customerId);
        expect(stored.order?.totalCents).to.equal(BigInt(sent.totalCents));
      } finally {
        orders.close();
      }

      const anonymous = await fetch(fill(item.request.url.raw), { method: "POST", headers: { "content-type": "application/json" }, body });
      expect(anonymous.status).to.equal(401);
      expect(((await anonymous.json()) as { code: string }).code).to.equal("unauthenticated");
    });
  });
});
