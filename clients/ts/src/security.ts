// A bearer token is a password: like the Python and Go clients, refuse to send one in the clear
// to anything but this machine (plaintext to a loopback address is what a local gateway is).

const LOOPBACK = /^(localhost|127(?:\.\d{1,3}){3}|\[::1\]|::1)$/i;

/** Throws when `token` would travel unencrypted: an http:// or ws:// URL to a non-loopback host. */
export function checkTokenTransport(url: string, token: unknown): void {
  if (token === undefined) return;
  const u = new URL(url);
  if (u.protocol === "https:" || u.protocol === "wss:") return;
  if (LOOPBACK.test(u.hostname)) return;
  throw new TypeError(`a token is sent over TLS only (or to a loopback address): ${u.protocol}//${u.host} is neither`);
}
