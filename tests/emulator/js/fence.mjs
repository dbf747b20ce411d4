// Preloaded (node --import) before every script: the SDK may reach loopback only.
// fetch and DNS lookups of any other host fail, so nothing can leave the machine.
import dns from "node:dns";

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1", "[::1]"]);

function refuse(host) {
  return new Error(`test is fenced to loopback: refused to reach ${host}`);
}

const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init) => {
  const url = new URL(input instanceof Request ? input.url : String(input));
  if (!LOOPBACK.has(url.hostname)) {
    throw refuse(url.host);
  }
  return realFetch(input, init);
};

const realLookup = dns.lookup;
dns.lookup = (host, ...rest) => {
  if (LOOPBACK.has(host)) {
    return realLookup(host, ...rest);
  }
  const callback = rest[rest.length - 1];
  process.nextTick(() => callback(refuse(host)));
};
