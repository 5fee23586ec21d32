import { startSharedServers, stopSharedServers } from "@shop/testkit/shared-servers";

// Two private MariaDB servers for the whole run (never the machine's shared one).
export async function mochaGlobalSetup() {
  await startSharedServers();
}

export async function mochaGlobalTeardown() {
  await stopSharedServers();
}
