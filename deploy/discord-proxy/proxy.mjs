// One REST proxy in front of Discord for every videobot process (README: "Discord's rate limits across
// processes"). @discordjs/proxy forwards each request through one @discordjs/rest client, which keeps the
// per-route buckets and the global limit (50 requests/s) of the bot token in one place; every process sets
// DISCORD_API_BASE=http://<this host>:<PORT>/api/v10.
//
//   DISCORD_UPSTREAM  where Discord is (default https://discord.com/api; tests: the loopback fake)
//   PORT, HOST        where to listen (default 8080 on 127.0.0.1)
import { createServer } from 'node:http';
import { proxyRequests } from '@discordjs/proxy';
import { REST } from '@discordjs/rest';
import { makeRequest, resolveBody } from '@discordjs/rest/undiciRequest';

// @discordjs/proxy hands the incoming request (a stream, readable once) to the REST client as the body, so a
// request sent again after a 429 went out empty: Discord answers 400 and the clip is lost. Read each body once
// and send the same bytes on every try.
const bodies = new WeakMap();
async function makeReplayableRequest(url, init) {
	const { body } = init;
	if (body === null || typeof body !== 'object' || typeof body.pipe !== 'function') {
		return makeRequest(url, init);
	}
	if (!bodies.has(body)) {
		bodies.set(body, await resolveBody(body));
	}
	return makeRequest(url, { ...init, body: bodies.get(body) });
}

const rest = new REST({
	api: process.env.DISCORD_UPSTREAM ?? 'https://discord.com/api',
	version: '10',
	// The bot decides what to send again (discord.py repeats a 5xx with the same enforced nonce; a webhook
	// post is never repeated blindly), so the proxy repeats nothing itself (it still waits out 429s).
	retries: 0,
	// A clip upload can take longer than the library's 15 s default.
	timeout: 120_000,
	makeRequest: makeReplayableRequest,
});

const server = createServer(proxyRequests(rest));
const port = Number(process.env.PORT ?? 8080);
const host = process.env.HOST ?? '127.0.0.1';
server.listen(port, host, () => {
	console.log(`discord-proxy listening on http://${host}:${server.address().port}/api/v10`);
});
for (const signal of ['SIGINT', 'SIGTERM']) {
	process.on(signal, () => server.close(() => process.exit(0)));
}
