// Open what exists: initExperiment with open, initLogger by projectId, initDataset by
// datasetId (then summarize it).
import { initDataset, initExperiment, initLogger, login } from "braintrust";

const project = process.env.BT_TEST_PROJECT;
const experiment = initExperiment(project, { experiment: "kept" });
experiment.log({ input: 1, output: 2, scores: { ok: 1 } });
await experiment.flush();
const dataset = initDataset(project, { dataset: "kept" });
const record = dataset.insert({ input: "q", expected: "a" });
await dataset.flush();
const projectId = (await experiment.project).id;

const reopened = initExperiment(project, { experiment: "kept", open: true });
const experimentRows = [];
for await (const row of reopened.fetch()) experimentRows.push({ input: row.input, output: row.output });

const logger = initLogger({ projectId, asyncFlush: true });
const span = logger.startSpan({ name: "by-id", event: { input: "hello" } });
span.end();
await logger.flush();

const byId = initDataset({ datasetId: await dataset.id });
const datasetRows = [];
for await (const row of byId.fetch()) datasetRows.push({ id: row.id, input: row.input, expected: row.expected });
const summary = await byId.summarize();
const ping = await (await login({})).apiConn().ping();
console.log(JSON.stringify({
  ping,
  project_id: projectId, experiment_id: await reopened.id, experimentRows, span_id: span.id,
  logger_project: (await logger.project).name, record, datasetRows, dataset_name: await byId.name,
  total_records: summary.dataSummary?.totalRecords ?? null,
}));
