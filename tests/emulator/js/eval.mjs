// Eval with a scorer, reporting nothing itself (the test reads the result back).
import { Eval } from "braintrust";

const exactMatch = ({ output, expected }) => ({ name: "exact_match", score: output === expected ? 1 : 0 });
const silent = { name: "silent", reportEval: async () => true, reportRun: async () => true };

const result = await Eval(
  process.env.BT_TEST_PROJECT,
  {
    experimentName: "doubling",
    data: () => [0, 1, 2, 3, 4].map((n) => ({ input: n, expected: n * 2 })),
    task: async (input) => (input === 3 ? 0 : input * 2),
    scores: [exactMatch],
  },
  { reporter: silent },
);
console.log(JSON.stringify({ summary: result.summary }));
