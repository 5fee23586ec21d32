import net from "node:net";

/**
 * What the proxy does to a connection:
 * - pass: forwards both ways;
 * - delay: holds every chunk, both ways, for `ms`;
 * - blackhole: accepts and reads, never forwards (a peer that hangs);
 * - drop-response: forwards the request, throws away whatever comes back, then
 *   resets the client side (the server did the work; the caller never hears);
 * - reset: accepts and resets at once (RST), before any byte reaches the server
 *   (a peer that is there but refuses every connection).
 */
export type ProxyMode =
  | { kind: "pass" }
  | { kind: "delay"; ms: number }
  | { kind: "blackhole" }
  | { kind: "drop-response"; /** Quiet time on the server side before the reset. Default 200 ms. */ afterMs?: number }
  | { kind: "reset" };

/**
 * A TCP fault proxy on 127.0.0.1 between a client and a server. A mode change
 * applies to new connections and resets the open ones, so a client's pooled
 * HTTP/2 session cannot dodge it.
 */
export class FaultProxy {
  port = 0;
  private mode: ProxyMode = { kind: "pass" };
  private server?: net.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(private target: { host?: string; port: number }) {}

  /** Points the proxy at another server port (new connections only). */
  setTarget(port: number, host?: string): void {
    this.target = { host, port };
  }

  async start(port = 0): Promise<void> {
    this.server = net.createServer((client) => this.accept(client));
    await new Promise<void>((resolve) => this.server!.listen(port, "127.0.0.1", resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  setMode(mode: ProxyMode): void {
    this.mode = mode;
    for (const s of this.sockets) s.destroy();
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private track(s: net.Socket): void {
    this.sockets.add(s);
    s.on("close", () => this.sockets.delete(s));
    s.on("error", () => {});
  }

  private accept(client: net.Socket): void {
    this.track(client);
    const mode = this.mode;
    if (mode.kind === "blackhole") {
      client.resume();
      return;
    }
    if (mode.kind === "reset") {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(this.target.port, this.target.host ?? "127.0.0.1");
    this.track(upstream);
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("close", closeBoth);
    upstream.on("close", closeBoth);
    const relay = (from: net.Socket, to: net.Socket, delayMs: number) =>
      from.on("data", (chunk) => (delayMs > 0 ? setTimeout(() => to.write(chunk), delayMs) : to.write(chunk)));
    if (mode.kind === "drop-response") {
      relay(client, upstream, 0);
      // Nothing comes back, not even the server's HTTP/2 preface; once the
      // server has gone quiet (its answer, and so its work, is done) the
      // client side is reset.
      let timer: NodeJS.Timeout | undefined;
      upstream.on("data", () => {
        clearTimeout(timer);
        timer = setTimeout(() => client.resetAndDestroy(), mode.afterMs ?? 200);
      });
      return;
    }
    const ms = mode.kind === "delay" ? mode.ms : 0;
    relay(client, upstream, ms);
    relay(upstream, client, ms);
  }
}
