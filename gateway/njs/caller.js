// njs functions for the gateway's nginx.conf (gateway/src/render.ts): who is calling, for the rate limit and
// the access log, and the trace context forwarded to the services. Runs inside nginx (njs 0.7 and later).

// The bearer token's subject, read without checking its signature: the services verify every token
// themselves. A forged subject only moves the caller to another rate-limit bucket, and the per-address
// limit still holds it. Empty when there is no readable token.
function subject(r) {
  var header = r.headersIn.Authorization || "";
  var m = /^Bearer\s+[A-Za-z0-9_-]+\.([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+\s*$/i.exec(header);
  if (!m || m[1].length > 4096) return "";
  try {
    var claims = JSON.parse(Buffer.from(m[1], "base64url").toString());
    var sub = claims && claims.sub;
    // A printable subject of sane length only: it becomes a log field and a limit key.
    return typeof sub === "string" && /^[\x21-\x7e]{1,128}$/.test(sub) ? sub : "";
  } catch (e) {
    return "";
  }
}

var TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;

// The W3C traceparent sent to the service: the caller's when it is well formed (and not all zeros), else a
// new trace, so that the access log line and the service's spans share one trace id.
function traceparent(r) {
  var given = r.headersIn.traceparent || "";
  var m = TRACEPARENT.exec(given);
  if (m && !/^0+$/.test(m[1]) && !/^0+$/.test(m[2])) return given;
  var traceId = r.variables.request_id;
  var spanId = require("crypto").createHash("sha256").update(traceId).digest("hex").slice(0, 16);
  return "00-" + traceId + "-" + spanId + "-01";
}

export default { subject, traceparent };
