// The spec reporter, plus one last line a CI log can be grepped for: "N passed, N failed".
// CommonJS because mocha loads reporters with require().
const Mocha = require("mocha");

class SummaryReporter extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    const started = Date.now();
    runner.once("end", () => {
      const s = this.stats;
      process.stdout.write(`took ${Math.round((Date.now() - started) / 1000)} s\n`);
      const skipped = s.pending > 0 ? `, ${s.pending} skipped` : "";
      process.stdout.write(`${s.passes} passed, ${s.failures} failed${skipped}\n`);
    });
  }
}

module.exports = SummaryReporter;
