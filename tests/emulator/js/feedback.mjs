// initExperiment over a dataset (each row names its dataset record: datasetRecordId), then
// logFeedback with a comment on one row.
import { initDataset, initExperiment } from "braintrust";

const project = process.env.BT_TEST_PROJECT;
const dataset = initDataset(project, { dataset: "cases" });
const records = [1, 2].map((n) => ({ id: dataset.insert({ input: n, expected: n * 2 }), n }));
await dataset.flush();

const experiment = initExperiment(project, { experiment: "over-cases", dataset });
const logged = records.map(({ id, n }) =>
  experiment.log({ input: n, output: n * 2, expected: n * 2, scores: { exact: 1 }, datasetRecordId: id }),
);
await experiment.flush();
experiment.logFeedback({ id: logged[0], scores: { reviewed: 0.5 }, comment: "checked by hand", source: "app" });
await experiment.flush();
console.log(JSON.stringify({ experiment_id: await experiment.id, logged }));
