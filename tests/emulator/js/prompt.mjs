// loadPrompt: the latest version by project and slug, one pinned by version, one by id.
import { loadPrompt } from "braintrust";

const projectName = process.env.BT_TEST_PROJECT;
const slug = process.env.BT_SLUG;
const version = process.env.BT_VERSION;

function shown(prompt) {
  return { id: prompt.id, version: prompt.version, messages: prompt.build({}).messages };
}

const latest = await loadPrompt({ projectName, slug, noTrace: true });
const pinned = await loadPrompt({ projectName, slug, version, noTrace: true });
const byId = await loadPrompt({ id: process.env.BT_PROMPT_ID, version, noTrace: true });
console.log(JSON.stringify({ latest: shown(latest), pinned: shown(pinned), by_id: shown(byId) }));
