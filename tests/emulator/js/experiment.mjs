// initExperiment twice (a base, then the current one) and summarize the second.
import { initExperiment } from "braintrust";

const project = process.env.BT_TEST_PROJECT;

async function run(name, cases) {
  const experiment = initExperiment(project, { experiment: name });
  for (const [text, acc, duration, tokens] of cases) {
    const span = experiment.startSpan({ name: "case", startTime: 1000, event: { input: { case: text } } });
    span.log({ output: text.toUpperCase(), scores: { acc }, metrics: { tokens } });
    span.end({ endTime: 1000 + duration });
  }
  await experiment.flush();
  return experiment;
}

await run("base", [["a", 0.5, 2, 10], ["b", 1, 2, 10], ["c", 0, 2, 10]]);
const current = await run("current", [["a", 1, 1, 10], ["b", 0.5, 3, 20], ["c", 0, 2, 10], ["d", 1, 2, 10]]);
const summary = await current.summarize();
console.log(JSON.stringify({ experiment_id: await current.id, summary }));
