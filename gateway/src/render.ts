/**
 * The gateway's nginx.conf, rendered from its settings: one server for gRPC
 * (HTTP/2, grpc_pass) and one for Connect JSON (HTTP/1.1 and 2, proxy_pass),
 * each routing by the service path prefix to that service's replicas, with
 * the internal RPCs (routes.ts) answered "unimplemented" at the edge, a rate
 * limit per caller and per address, a request size limit, timeouts, passive
 * health checks on the replicas, and JSON access logs carrying the trace id.
 *
 * Errors the gateway makes itself are answered in each protocol's own terms:
 * a gRPC status in the headers on the gRPC port (RESOURCE_EXHAUSTED for the
 * rate and size limits, UNIMPLEMENTED for a method not routed, UNAVAILABLE
 * when no replica answers), a Connect error body with its HTTP status on the
 * Connect port (429, 413, 404, 503).
 */
import { EDGE_SERVICES, UPSTREAMS, type EdgeService, type UpstreamName } from "./routes.js";

export interface Endpoint {
  host: string;
  port: number;
}

export interface GatewayLimits {
  /** Requests a second per caller (the token's subject, else the address). */
  ratePerCaller: number;
  /** Requests a caller may send over its rate at once before being refused. */
  burstPerCaller: number;
  /** Requests a second per client address, whatever the tokens say. */
  ratePerAddress: number;
  burstPerAddress: number;
  /** Largest request body. */
  maxRequestBytes: number;
  /** How long a replica may take to answer (between two reads of its answer). */
  upstreamTimeoutMs: number;
  /** How long connecting to a replica may take before the next one is tried. */
  connectTimeoutMs: number;
  /** Failed attempts within failTimeoutSeconds that take a replica out, for failTimeoutSeconds (nginx counts whole seconds). */
  maxFails: number;
  failTimeoutSeconds: number;
  /** How long a client may take to send its request headers or body. */
  clientTimeoutMs: number;
}

export const DEFAULT_LIMITS: GatewayLimits = {
  ratePerCaller: 200,
  burstPerCaller: 400,
  ratePerAddress: 1000,
  burstPerAddress: 2000,
  maxRequestBytes: 1024 * 1024,
  upstreamTimeoutMs: 30_000,
  connectTimeoutMs: 2_000,
  maxFails: 1,
  failTimeoutSeconds: 10,
  clientTimeoutMs: 10_000,
};

export interface GatewayConfig {
  /** Where the two servers listen. */
  host: string;
  grpcPort: number;
  httpPort: number;
  /** TLS at the edge (HTTP/2 over TLS for gRPC, HTTP/1.1 and 2 for Connect); absent: plaintext (h2c for gRPC). */
  tls?: { certFile: string; keyFile: string };
  /**
   * TLS to the replicas (grpcs:// and https://): the CA their certificates
   * must chain to, and the certificate the gateway presents when they require
   * mutual TLS. Absent: plaintext to the replicas.
   */
  upstreamTls?: {
    caFile: string;
    certFile?: string;
    keyFile?: string;
    /**
     * The name every service's certificate is checked against (and sent as SNI). Default: the host of each
     * service's first replica, its DNS name in compose and Kubernetes. nginx matches DNS names only, so replicas
     * addressed by IP need one (e.g. "localhost" with a certificate for it).
     */
    serverName?: string;
  };
  /** Each service's replicas: their gRPC and their HTTP (Connect) endpoints. */
  upstreams: Record<UpstreamName, { grpc: Endpoint[]; http: Endpoint[] }>;
  limits: GatewayLimits;
  /** Files and folders nginx uses; absolute, or relative to nginx's prefix (-p). */
  paths: {
    /** The njs module's .so, loaded with load_module; absent when nginx has it built in or loads it elsewhere. */
    njsModule?: string;
    /** The folder holding caller.js. */
    njsDir: string;
    pidFile: string;
    /** Folder for request bodies and answers nginx buffers to disk. */
    tempDir: string;
    accessLog: string;
    errorLog: string;
  };
  /** nginx worker processes; "auto" is one per core. */
  workers: number | "auto";
  /** The user nginx's workers run as, when it starts as root; absent: nginx's default. */
  user?: string;
}

/** nginx time: whole milliseconds. */
const ms = (n: number) => `${Math.round(n)}ms`;

function upstreamName(service: UpstreamName, protocol: "grpc" | "http"): string {
  return `${service}_${protocol}`;
}

function upstreamBlock(name: string, endpoints: Endpoint[], limits: GatewayLimits): string {
  if (endpoints.length === 0) throw new Error(`upstream ${name} has no replicas`);
  const servers = endpoints
    .map((e) => `    server ${e.host}:${e.port} max_fails=${limits.maxFails} fail_timeout=${limits.failTimeoutSeconds}s;`)
    .join("\n");
  return `  upstream ${name} {\n    zone ${name} 64k;\n${servers}\n    keepalive 32;\n  }`;
}

/**
 * The answers the gateway makes itself: which of nginx's own statuses each takes (error_page), and how it is said
 * on each port: a gRPC status, or a Connect error with its HTTP status. `refusal` goes to the access log.
 */
const EDGE_ERRORS = [
  { name: "unauthenticated", catches: "401", grpc: 16, http: 401, connect: "unauthenticated", refusal: "unauthenticated",
    message: () => "unauthenticated: no bearer token: send the header authorization: Bearer <token>" },
  { name: "unimplemented", catches: "404", grpc: 12, http: 404, connect: "unimplemented", refusal: "not_routed",
    message: () => "unimplemented: the gateway does not serve this method" },
  { name: "too_large", catches: "413", grpc: 8, http: 413, connect: "resource_exhausted", refusal: "too_large",
    message: (l: GatewayLimits) => `resource exhausted: the request is larger than ${l.maxRequestBytes} bytes` },
  { name: "rate_limited", catches: "429", grpc: 8, http: 429, connect: "resource_exhausted", refusal: "rate_limited",
    message: () => "resource exhausted: rate limit exceeded, retry later" },
  { name: "unavailable", catches: "500 502 503", grpc: 14, http: 503, connect: "unavailable", refusal: "",
    message: () => "unavailable: no replica of the service answered" },
  { name: "deadline", catches: "504", grpc: 4, http: 504, connect: "deadline_exceeded", refusal: "",
    message: () => "deadline exceeded: the service did not answer in time" },
];

/** The error_page lines of a server: each of nginx's statuses to its named location. */
const errorPages = () => EDGE_ERRORS.map((e) => `    error_page ${e.catches} = @${e.name};`).join("\n");

/** The named locations that answer them, in the protocol's terms. */
function errorLocations(protocol: "grpc" | "connect", limits: GatewayLimits): string {
  return EDGE_ERRORS.map((e) => {
    // gRPC: 200 with the status in the headers and no body, the trailers-only answer every client reads.
    const answer =
      protocol === "grpc"
        ? [
            `default_type application/grpc;`,
            `add_header grpc-status ${e.grpc} always;`,
            `add_header grpc-message "${e.message(limits)}" always;`,
            `return 200 "";`,
          ]
        : [`default_type application/json;`, `return ${e.http} '{"code":"${e.connect}","message":"${e.message(limits)}"}';`];
    return [`    location @${e.name} {`, `      set $gw_refusal "${e.refusal}";`, ...answer.map((line) => `      ${line}`), `    }`].join("\n");
  }).join("\n");
}

/** The locations of one server: each routed method's service by prefix, each internal method refused exactly. */
function routeLocations(services: readonly EdgeService[], pass: (upstream: UpstreamName) => string): string {
  const lines: string[] = [];
  for (const s of services) {
    const routed = s.methods.filter((m) => m.routed);
    const internal = s.methods.filter((m) => !m.routed);
    if (routed.length === 0) {
      lines.push(`    # ${s.typeName}: internal only, not routed (all of ${s.methods.map((m) => m.name).join(", ")})`);
      continue;
    }
    for (const m of internal) {
      lines.push(`    location = /${s.typeName}/${m.name} { return 404; }   # internal only`);
    }
    lines.push(`    location /${s.typeName}/ {\n${pass(s.upstream)}\n    }`);
  }
  return lines.join("\n");
}

const edgeCommon = (limits: GatewayLimits) => `
    client_max_body_size ${limits.maxRequestBytes};
    client_header_timeout ${ms(limits.clientTimeoutMs)};
    client_body_timeout ${ms(limits.clientTimeoutMs)};
    limit_req_status 429;
    limit_req_log_level warn;`;

/**
 * What every routed location does before passing the call on: a bearer token must be present (without one the
 * services would refuse the call anyway), and the caller must be within its rate limits.
 */
const admit = (limits: GatewayLimits) => `      if ($http_authorization !~* "^Bearer\\s+\\S") { return 401; }
      limit_req zone=per_caller burst=${limits.burstPerCaller} nodelay;
      limit_req zone=per_address burst=${limits.burstPerAddress} nodelay;`;

function tlsLines(c: GatewayConfig): string {
  if (!c.tls) return "";
  return `
    ssl_certificate ${c.tls.certFile};
    ssl_certificate_key ${c.tls.keyFile};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:gateway_tls:10m;`;
}

/**
 * TLS to the replicas, for grpc_* or proxy_* directives: their certificates checked against the CA, and the
 * client certificate for mutual TLS. Server-level lines, and per location the name to check (and send as SNI):
 * serverName, else the host of the service's first replica; never the upstream group's name, nginx's default.
 */
function upstreamTlsLines(c: GatewayConfig, prefix: "grpc" | "proxy"): { server: string; location: (u: UpstreamName, protocol: "grpc" | "http") => string } {
  const t = c.upstreamTls;
  if (!t) return { server: "", location: () => "" };
  const client = t.certFile ? `\n    ${prefix}_ssl_certificate ${t.certFile};\n    ${prefix}_ssl_certificate_key ${t.keyFile};` : "";
  return {
    server: `
    ${prefix}_ssl_trusted_certificate ${t.caFile};
    ${prefix}_ssl_verify on;
    ${prefix}_ssl_server_name on;
    ${prefix}_ssl_session_reuse on;${client}`,
    location: (u, protocol) => `\n      ${prefix}_ssl_name ${t.serverName ?? c.upstreams[u][protocol][0]!.host};`,
  };
}

function grpcServer(c: GatewayConfig, services: readonly EdgeService[]): string {
  const scheme = c.upstreamTls ? "grpcs" : "grpc";
  const tls = upstreamTlsLines(c, "grpc");
  const pass = (u: UpstreamName) => `${admit(c.limits)}${tls.location(u, "grpc")}\n      grpc_pass ${scheme}://${upstreamName(u, "grpc")};`;
  return `
  # gRPC: HTTP/2${c.tls ? " over TLS" : " (h2c)"}.
  server {
    listen ${c.host}:${c.grpcPort}${c.tls ? " ssl" : ""} http2;
    set $gw_protocol grpc;
    set $gw_refusal "";${tlsLines(c)}${edgeCommon(c.limits)}
    grpc_connect_timeout ${ms(c.limits.connectTimeoutMs)};
    grpc_read_timeout ${ms(c.limits.upstreamTimeoutMs)};
    grpc_send_timeout ${ms(c.limits.upstreamTimeoutMs)};
    grpc_next_upstream error timeout;
    grpc_set_header traceparent $gw_traceparent;
    grpc_set_header x-forwarded-for $proxy_add_x_forwarded_for;
    grpc_set_header x-request-id $request_id;${tls.server}

${errorPages()}

${routeLocations(services, pass)}
    location / { return 404; }

${errorLocations("grpc", c.limits)}
  }`;
}

function connectServer(c: GatewayConfig, services: readonly EdgeService[]): string {
  const scheme = c.upstreamTls ? "https" : "http";
  const tls = upstreamTlsLines(c, "proxy");
  const pass = (u: UpstreamName) => `${admit(c.limits)}${tls.location(u, "http")}\n      proxy_pass ${scheme}://${upstreamName(u, "http")};`;
  return `
  # Connect JSON: HTTP/1.1${c.tls ? " and HTTP/2 over TLS" : ""}.
  server {
    listen ${c.host}:${c.httpPort}${c.tls ? " ssl http2" : ""};
    set $gw_protocol connect;
    set $gw_refusal "";${tlsLines(c)}${edgeCommon(c.limits)}
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
    proxy_set_header traceparent $gw_traceparent;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Request-Id $request_id;
    proxy_connect_timeout ${ms(c.limits.connectTimeoutMs)};
    proxy_read_timeout ${ms(c.limits.upstreamTimeoutMs)};
    proxy_send_timeout ${ms(c.limits.upstreamTimeoutMs)};
    proxy_next_upstream error timeout;
    proxy_buffering off;${tls.server}

${errorPages()}

    # The gateway's own health, for load balancers and probes: it answers without asking a service.
    location = /healthz {
      default_type text/plain;
      return 200 "ok\\n";
    }

${routeLocations(services, pass)}
    location / { return 404; }

${errorLocations("connect", c.limits)}
  }`;
}

/** Renders nginx.conf for these settings; routes default to every service's (routes.ts). */
export function renderNginxConf(c: GatewayConfig, services: readonly EdgeService[] = EDGE_SERVICES): string {
  const l = c.limits;
  for (const [name, value] of Object.entries(l)) {
    if (!Number.isInteger(value) || value < 0) throw new Error(`gateway limit ${name} must be a whole number ≥ 0, not ${value}`);
  }
  if (l.ratePerCaller < 1 || l.ratePerAddress < 1) throw new Error("gateway rates must be at least 1 request a second");
  const p = c.paths;
  const upstreams = UPSTREAMS.flatMap((u) => [
    upstreamBlock(upstreamName(u, "grpc"), c.upstreams[u].grpc, l),
    upstreamBlock(upstreamName(u, "http"), c.upstreams[u].http, l),
  ]).join("\n");
  return `# The API gateway's nginx.conf, rendered by gateway/src/render.ts (npm run gateway:render): do not edit by hand.
${p.njsModule ? `load_module ${p.njsModule};\n` : ""}${c.user ? `user ${c.user};\n` : ""}worker_processes ${c.workers};
pid ${p.pidFile};
error_log ${p.errorLog} warn;

events {
  worker_connections 4096;
}

http {
  server_tokens off;
  client_body_temp_path ${p.tempDir}/client_body;
  proxy_temp_path ${p.tempDir}/proxy;
  fastcgi_temp_path ${p.tempDir}/fastcgi;
  uwsgi_temp_path ${p.tempDir}/uwsgi;
  scgi_temp_path ${p.tempDir}/scgi;

  # Who is calling (the bearer token's subject, unverified: the services verify it) and the trace to forward.
  js_path ${p.njsDir};
  js_import caller from caller.js;
  js_set $gw_subject caller.subject;
  js_set $gw_traceparent caller.traceparent;

  # Rate limits: per caller (its subject, else its address) and per address whatever the tokens say.
  map $gw_subject $gw_caller_key {
    "" "address:$binary_remote_addr";
    default "subject:$gw_subject";
  }
  limit_req_zone $gw_caller_key zone=per_caller:10m rate=${l.ratePerCaller}r/s;
  limit_req_zone $binary_remote_addr zone=per_address:10m rate=${l.ratePerAddress}r/s;

  map $gw_traceparent $gw_trace_id {
    "~^00-(?<id>[0-9a-f]{32})-" $id;
    default "";
  }
  # The gRPC status of the answer: the service's (a trailer, or a header for trailers-only answers), else the gateway's own.
  map $upstream_trailer_grpc_status $gw_grpc_status {
    "" $sent_http_grpc_status;
    default $upstream_trailer_grpc_status;
  }

  log_format gateway_json escape=json '{"time":"$time_iso8601","protocol":"$gw_protocol","remote":"$remote_addr",'
    '"caller":"$gw_subject","method":"$request_method","path":"$uri","status":$status,"grpcStatus":"$gw_grpc_status",'
    '"refusal":"$gw_refusal","requestBytes":$request_length,"responseBytes":$bytes_sent,"seconds":$request_time,'
    '"upstream":"$upstream_addr","upstreamStatus":"$upstream_status","upstreamSeconds":"$upstream_response_time",'
    '"traceId":"$gw_trace_id","requestId":"$request_id"}';
  access_log ${p.accessLog} gateway_json;

  keepalive_timeout 75s;
  # nginx closes a client connection after this many requests (default 1000); on HTTP/2 that is a GOAWAY, and a
  # call a client starts on the connection at that moment is refused (REFUSED_STREAM), which not every client
  # retries. Rarely, then.
  keepalive_requests 1000000;
  http2_max_concurrent_streams 256;

${upstreams}
${grpcServer(c, services)}
${connectServer(c, services)}
}
`;
}
