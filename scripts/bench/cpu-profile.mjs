// Preload for `npm run bench -- --profile`: NODE_OPTIONS refuses --cpu-prof,
// but accepts --import of this file. It profiles the main thread from start
// to exit and writes $CPU_PROFILE_DIR/<name>-<pid>.cpuprofile. The main-thread
// inspector session answers synchronously, so the write also happens inside
// process.exit() (the services exit that way on SIGTERM).
import { Session } from "node:inspector";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";

const dir = process.env.CPU_PROFILE_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post("Profiler.enable");
  session.post("Profiler.setSamplingInterval", { interval: 1000 });
  session.post("Profiler.start");
  process.once("exit", () => {
    session.post("Profiler.stop", (err, result) => {
      if (err) return;
      mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, `${process.env.CPU_PROFILE_NAME ?? "process"}-${process.pid}.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}
