import type { DescService } from "@bufbuild/protobuf";
import { exampleMessage } from "./examples.js";
import { comment, unaryMethods } from "./openapi.js";

const POSTMAN_SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json";

/** "OrderService" -> "orderService": the stem of a service's collection variables. */
export function variableStem(service: DescService): string {
  return service.name.charAt(0).toLowerCase() + service.name.slice(1);
}

export function baseUrlVariable(service: DescService): string {
  return `${variableStem(service)}BaseUrl`;
}

export function tokenVariable(service: DescService): string {
  return `${variableStem(service)}Token`;
}

/**
 * A Postman collection (v2.1) with every unary method of the services: a
 * folder per service, bearer auth from the service's token variable, and a
 * request per method with an example body. baseUrls gives the default base URL
 * of each proto package (the HTTP port of the process that serves it).
 */
export function postmanCollection(services: DescService[], baseUrls: Map<string, string>): object {
  const variable: object[] = [];
  const item = services.map((service) => {
    const baseUrl = baseUrlVariable(service);
    const token = tokenVariable(service);
    variable.push(
      {
        key: baseUrl,
        value: baseUrls.get(service.file.proto.package) ?? "http://localhost:8080",
        type: "string",
        description: `Base URL of ${service.typeName}: the Connect/HTTP port of the service that hosts it.`,
      },
      {
        key: token,
        value: "",
        type: "string",
        description: `Bearer token (JWT) for ${service.typeName}, with the scopes its methods need (npm run auth prints one).`,
      },
    );
    return {
      name: service.typeName,
      description: comment(service),
      auth: { type: "bearer", bearer: [{ key: "token", value: `{{${token}}}`, type: "string" }] },
      item: unaryMethods(service).map((method) => ({
        name: method.name,
        request: {
          method: "POST",
          description: comment(method),
          header: [
            { key: "Content-Type", value: "application/json" },
            { key: "Connect-Protocol-Version", value: "1" },
          ],
          url: {
            raw: `{{${baseUrl}}}/${service.typeName}/${method.name}`,
            host: [`{{${baseUrl}}}`],
            path: [service.typeName, method.name],
          },
          body: {
            mode: "raw",
            raw: JSON.stringify(exampleMessage(method.input, "postman"), null, 2),
            options: { raw: { language: "json" } },
          },
        },
        response: [],
      })),
    };
  });
  return {
    info: {
      name: "shop",
      description:
        "Every RPC of the shop's services over Connect JSON (POST /<package>.<Service>/<Method>, Content-Type application/json). " +
        "Set each service's BaseUrl and Token variables; generated from the protos by npm run generate.",
      schema: POSTMAN_SCHEMA,
    },
    item,
    variable,
  };
}
