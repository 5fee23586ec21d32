import type http from "node:http";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { openApiDocuments, type OpenApiDocument } from "./gen/openapi.js";
import type { Logger } from "./logger.js";

/**
 * The OpenAPI document of a port: the documents of the services it hosts
 * (generated from the protos, see scripts/protoc-gen-openapi) merged into one.
 * Paths, schemas and tags are unions: schemas of one package shared by two
 * services are the same message, so the same schema. No servers entry: the
 * document is served by the port it describes, which is its default server.
 * Services without a document (none here) are named in missing.
 */
export function mergedOpenApiDocument(typeNames: readonly string[]): { document: OpenApiDocument; missing: string[] } {
  const found = typeNames.filter((t) => t in openApiDocuments).map((t) => openApiDocuments[t]!);
  const missing = typeNames.filter((t) => !(t in openApiDocuments));
  const components: Record<string, Record<string, unknown>> = {};
  for (const doc of found) {
    for (const [kind, entries] of Object.entries(doc.components)) Object.assign((components[kind] ??= {}), entries);
  }
  const document: OpenApiDocument = {
    openapi: "3.1.0",
    info: {
      title: found.length === 1 ? found[0]!.info.title : found.map((d) => d.info.title.replace(/^.*\./, "")).join(", "),
      version: [...new Set(found.map((d) => d.info.version))].join(", ") || "v1",
      description: found.map((d) => (found.length === 1 ? d.info.description : `## ${d.info.title}\n\n${d.info.description ?? ""}`)).join("\n\n"),
    },
    tags: found.flatMap((d) => d.tags),
    security: [{ bearerAuth: [] }],
    paths: Object.assign({}, ...found.map((d) => d.paths)),
    components,
  };
  return { document, missing };
}

/** The interactive page: Swagger UI from the swagger-ui-dist package, reading this port's /openapi.json. */
const DOCS_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>API documents</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
`;

/**
 * Swagger UI's settings: this port's document, "Try it out" on from the
 * start against the same origin, the bearer token (Authorize) kept across
 * reloads, and no call to an online validator.
 */
const INIT_JS = `window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  tryItOutEnabled: true,
  persistAuthorization: true,
  displayRequestDuration: true,
  validatorUrl: null,
});
`;

/** The files of swagger-ui-dist served under /docs/, with their types. */
const ASSETS: Record<string, string> = {
  "swagger-ui.css": "text/css; charset=utf-8",
  "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
  "favicon-32x32.png": "image/png",
  "favicon-16x16.png": "image/png",
};

export interface ApiDocs {
  /** Answers GET /openapi.json, /docs and /docs/<asset>; false for any other request. */
  serve(req: http.IncomingMessage, res: http.ServerResponse): boolean;
}

/**
 * GET /openapi.json and /docs for the services a port hosts. Public like
 * /healthz: they describe the API, and every method still needs its token.
 * Like the other plain-HTTP paths, only failures are logged.
 */
export function apiDocs(typeNames: readonly string[], logger: Logger): ApiDocs {
  const { document, missing } = mergedOpenApiDocument(typeNames);
  if (missing.length > 0) logger.warn({ services: missing }, `no OpenAPI document for ${missing.join(", ")}: run npm run generate`);
  const json = JSON.stringify(document);
  const uiDir = path.dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"));
  const cache = new Map<string, Promise<Buffer>>();
  const headers = { "x-content-type-options": "nosniff" };

  return {
    serve(req, res) {
      if (req.method !== "GET" && req.method !== "HEAD") return false;
      const pathname = (req.url ?? "").split("?")[0]!;
      if (pathname === "/openapi.json") {
        res.writeHead(200, { ...headers, "content-type": "application/json; charset=utf-8", "cache-control": "no-cache" }).end(json);
        return true;
      }
      if (pathname === "/docs" || pathname === "/docs/") {
        res.writeHead(200, { ...headers, "content-type": "text/html; charset=utf-8", "cache-control": "no-cache" }).end(DOCS_HTML);
        return true;
      }
      if (pathname === "/docs/init.js") {
        res.writeHead(200, { ...headers, "content-type": "text/javascript; charset=utf-8", "cache-control": "no-cache" }).end(INIT_JS);
        return true;
      }
      const asset = pathname.startsWith("/docs/") ? pathname.slice("/docs/".length) : undefined;
      if (asset === undefined || !Object.hasOwn(ASSETS, asset)) return false;
      let bytes = cache.get(asset);
      if (!bytes) {
        bytes = readFile(path.join(uiDir, asset));
        cache.set(asset, bytes);
        bytes.catch(() => cache.delete(asset));
      }
      bytes.then(
        (b) => res.writeHead(200, { ...headers, "content-type": ASSETS[asset]!, "cache-control": "public, max-age=3600" }).end(b),
        (err: unknown) => {
          logger.error({ err, asset }, `serving /docs/${asset} failed: ${(err as Error).message}`);
          res.writeHead(500, { "content-type": "text/plain" }).end("docs asset unavailable\n");
        },
      );
      return true;
    },
  };
}
