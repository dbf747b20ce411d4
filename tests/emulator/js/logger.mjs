// initLogger with nested spans, one row possibly over the request limit (BIG_ROW_BYTES).
import { initLogger } from "braintrust";

const logger = initLogger({ projectName: process.env.BT_TEST_PROJECT, asyncFlush: true });
const root = logger.startSpan({ name: "root", event: { input: { q: "why" } } });
const child = root.startSpan({ name: "child", event: { input: "sub" } });
child.log({ output: "sub answer", scores: { good: 0.75 }, metrics: { tokens: 3 } });
child.end();
root.log({ output: "answer", metadata: { k: [1, 2] } });
root.end();
const bigBytes = Number(process.env.BIG_ROW_BYTES ?? 0);
let big = null;
if (bigBytes > 0) {
  big = logger.startSpan({ name: "big", event: { input: "é".repeat(bigBytes / 2) } });
  big.end();
}
await logger.flush();

const ids = (span) => ({ id: span.id, span_id: span.spanId, root_span_id: span.rootSpanId });
console.log(JSON.stringify({
  project_id: (await logger.project).id,
  root: ids(root),
  child: ids(child),
  big: big && ids(big),
}));
