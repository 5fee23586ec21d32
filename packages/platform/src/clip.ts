/**
 * Bounds on what a caller sent that is echoed back in an error or written to
 * a log: a hostile caller must not make the answer or the log line as large
 * as its request (a 6 KiB token header came back whole), and nothing it sends
 * may turn one log line into several.
 */

/** Longest piece of caller input quoted in one message: room for any valid id (64) with a prefix such as "customer:". */
export const MAX_ECHO_CHARS = 128;
/** Longest error message sent to a caller or logged as a refusal's reason. */
export const MAX_MESSAGE_CHARS = 1024;

/**
 * s cut to max characters (never inside a surrogate pair), with "…(N more)"
 * saying how much was left out; control characters are shown escaped so a
 * quoted value cannot forge a line break in a log read as text.
 */
export function clip(s: string, max = MAX_ECHO_CHARS): string {
  let out = s;
  if (s.length > max) {
    let end = max;
    const last = s.charCodeAt(end - 1);
    if (last >= 0xd800 && last <= 0xdbff) end--;
    out = `${s.slice(0, end)}…(${s.length - end} more)`;
  }
  // eslint-disable-next-line no-control-regex
  return out.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** Any value the caller sent, as JSON text (strings quoted), clipped: for "unsupported algorithm <x>". */
export function quote(value: unknown, max = MAX_ECHO_CHARS): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return clip(text, max);
}
