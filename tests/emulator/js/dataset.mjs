// initDataset: insert rows, then iterate them back in pages of BT_PAGE_SIZE.
import { initDataset } from "braintrust";

const project = process.env.BT_TEST_PROJECT;
const count = Number(process.env.BT_ROWS);
const dataset = initDataset(project, { dataset: "js-rows" });
const inserted = [];
for (let n = 0; n < count; n++) {
  inserted.push(dataset.insert({ input: { n }, expected: n % 3, metadata: { k: `v${n}` } }));
}
await dataset.flush();

const reread = initDataset(project, { dataset: "js-rows" });
const rows = [];
for await (const row of reread.fetch({ batchSize: Number(process.env.BT_PAGE_SIZE) })) {
  rows.push({ id: row.id, input: row.input, expected: row.expected, metadata: row.metadata });
}
console.log(JSON.stringify({ dataset_id: await dataset.id, inserted, rows }));
