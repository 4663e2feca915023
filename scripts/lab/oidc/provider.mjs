// The lab's OpenID provider: oidc-provider (panva) on 127.0.0.1, for mailfront's interop tests.
//
// LAB ONLY. It speaks plain HTTP on loopback (issuer http://127.0.0.1:PORT), keeps everything in
// memory, lets any lab user in through oidc-provider's development login pages, and has a
// grant that mints access tokens without a login. Never expose it.
//
//   node provider.mjs --port P --keys KEYS.json --user alice@example.com [--user ...]
//        --audience https://mail.example.com [--audience ...] --client-id ID --client-secret S
//        [--redirect-uri URI ...] [--ttl SECONDS]
//   node provider.mjs genkey ALG KID     print a new private JWK (RS256, ES256 or EdDSA)
//
// KEYS.json is a JWKS with private keys, read once at start: rotating keys means restarting with
// another file. For each algorithm the first key of that algorithm signs, so a new key goes first.
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as querystring from 'node:querystring';

const MINT = 'urn:mailfront:lab:mint';
const CURVES = {
  RS256: ['rsa', { modulusLength: 2048 }],
  ES256: ['ec', { namedCurve: 'P-256' }],
  EdDSA: ['ed25519', {}],
};

if (process.argv[2] === 'genkey') {
  // Keys come from here so that the Python side needs no crypto library of its own.
  const [alg, kid] = process.argv.slice(3);
  if (!CURVES[alg] || !kid) throw new Error('usage: genkey RS256|ES256|EdDSA KID');
  const { privateKey } = generateKeyPairSync(...CURVES[alg]);
  console.log(JSON.stringify({ ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' }));
  process.exit(0);
}

const { values: opt } = parseArgs({
  options: {
    port: { type: 'string' },
    keys: { type: 'string' },
    user: { type: 'string', multiple: true, default: [] },
    audience: { type: 'string', multiple: true, default: [] },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true, default: [] },
    ttl: { type: 'string', default: '3600' },
  },
});
for (const name of ['port', 'keys', 'client-id', 'client-secret']) {
  if (!opt[name]) throw new Error(`--${name} is required`);
}
if (!opt.audience.length) throw new Error('--audience is required');
const defaultTtl = Number(opt.ttl);

// The account id (`sub`) is not the address, so that a resource server which names the user by
// the wrong claim is caught; the Python side derives the same value (lab.Oidc.subject).
const subjectOf = (email) => createHash('sha256').update(email).digest('hex').slice(0, 16);
const emailOf = new Map(opt.user.map((email) => [subjectOf(email), email]));

const { default: Provider, errors } = await import('oidc-provider');
const issuer = `http://127.0.0.1:${opt.port}`;
const mailScopes = 'imap pop3 submission';
const resourceServer = (audience, alg = 'RS256') => ({
  scope: mailScopes,
  audience,
  accessTokenTTL: defaultTtl,
  accessTokenFormat: 'jwt',
  jwt: { sign: { alg } },
});

const provider = new Provider(issuer, {
  jwks: JSON.parse(readFileSync(opt.keys, 'utf8')),
  clients: [{
    client_id: opt['client-id'],
    client_secret: opt['client-secret'],
    redirect_uris: opt['redirect-uri'],
    grant_types: ['authorization_code', 'refresh_token', MINT],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  async findAccount(ctx, sub) {
    const email = emailOf.get(sub);
    return email && { accountId: sub, claims: () => ({ sub, email, email_verified: true }) };
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  scopes: ['openid', 'offline_access', 'email', ...mailScopes.split(' ')],
  // Resource servers name their user by `email`; a token issued for the future (a lab mint with
  // a positive shift) says so with `nbf`.
  async extraTokenClaims(ctx, token) {
    const email = emailOf.get(token.accountId);
    const nbf = token.iat > Math.floor(Date.now() / 1000) ? { nbf: token.iat } : {};
    return email ? { email, ...nbf } : undefined;
  },
  ttl: {
    AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL ?? defaultTtl,
    IdToken: 3600, Interaction: 600, Grant: 14 * 86400, RefreshToken: 14 * 86400, Session: 14 * 86400,
  },
  features: {
    devInteractions: { enabled: true }, // a browser test may log in through its pages
    // Any client that authenticates with a secret may ask (mailfront does, with its own).
    introspection: { enabled: true, allowedPolicy: (ctx, client) => client.clientAuthMethod !== 'none' },
    revocation: { enabled: true, allowedPolicy: (ctx, client) => client.clientAuthMethod !== 'none' },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => opt.audience[0],
      useGrantedResource: () => true,
      getResourceServerInfo(ctx, indicator) {
        if (!opt.audience.includes(indicator)) throw new errors.InvalidTarget();
        return resourceServer(indicator);
      },
    },
  },
  pkce: { required: () => true },
  cookies: { keys: [randomBytes(32).toString('hex')] },
});

// oidc-provider neither stores JWT access tokens nor introspects or revokes them (its endpoints
// answer unsupported_token_type). mailfront needs both, so every JWT access token is stored like
// an opaque one under its `jti`, and the two endpoints look a JWT we issued up by its jti.
const issued = new Map(); // JWT -> jti
const { AccessToken } = provider;
const valueAndPayload = AccessToken.prototype.getValueAndPayload;
AccessToken.prototype.getValueAndPayload = async function storedJwt() {
  if (this.format !== 'jwt') return valueAndPayload.call(this);
  const { value } = await valueAndPayload.call(this);
  this.format = 'opaque'; // the record an opaque token would have
  let payload;
  try {
    ({ payload } = await valueAndPayload.call(this));
  } finally {
    this.format = 'jwt';
  }
  issued.set(value, this.jti);
  return { value, payload };
};
// Both rewrites need the form body before oidc-provider parses it (it then takes the parsed one,
// and warns once about it).
const lookedUp = new Set([provider.pathFor('introspection'), provider.pathFor('revocation')]);
provider.use(async (ctx, next) => {
  const login = ctx.path.startsWith('/interaction/');
  if (ctx.method === 'POST' && (login || lookedUp.has(ctx.path)) && ctx.is('application/x-www-form-urlencoded')) {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const body = querystring.parse(Buffer.concat(chunks).toString());
    if (login && body.prompt === 'login' && typeof body.login === 'string') {
      // The development login page takes the account id as typed; people type the address.
      body.login = subjectOf(body.login);
    } else if (!login && typeof body.token === 'string' && body.token.split('.').length === 3) {
      // A JWT not issued by this run (forged, or from before a restart) is unknown: inactive.
      body.token = issued.get(body.token) ?? 'unknown-jwt';
    }
    ctx.request.body = body;
  }
  await next();
});

// The lab's mint: a real access token (stored, introspectable, revocable, signed with the
// provider's key) for a lab user, without a browser. Parameters: account (an address), resource
// (default: the first audience), scope, ttl (seconds), alg (RS256, ES256, EdDSA) and shift
// (seconds added to iat and exp: negative for an expired token, positive for a future one).
provider.registerGrantType(MINT, async (ctx) => {
  const { client, params } = ctx.oidc;
  const accountId = subjectOf(params.account ?? '');
  if (!emailOf.has(accountId)) throw new errors.InvalidGrant('account is not a lab user');
  const resource = params.resource ?? opt.audience[0];
  if (!URL.canParse(resource)) throw new errors.InvalidTarget('resource must be an absolute URI');
  const number = (name, fallback) => {
    const value = params[name] === undefined ? fallback : Number(params[name]);
    if (!Number.isInteger(value)) throw new errors.InvalidRequest(`${name} must be an integer`);
    return value;
  };
  const ttl = number('ttl', defaultTtl);
  if (ttl <= 0) throw new errors.InvalidRequest('ttl must be positive');
  const alg = params.alg ?? 'RS256';
  if (!CURVES[alg]) throw new errors.InvalidRequest('alg must be RS256, ES256 or EdDSA');
  const scope = params.scope ?? `openid email ${mailScopes}`;

  // A grant as a login would leave, so that revoking by grant works as for any other token.
  const grant = new provider.Grant({ accountId, clientId: client.clientId });
  grant.addResourceScope(resource, scope);
  const grantId = await grant.save();

  const iat = Math.floor(Date.now() / 1000) + number('shift', 0);
  const token = new AccessToken({
    accountId, client, grantId, gty: MINT, scope, iat, exp: iat + ttl,
    // Any resource is accepted here (unlike at login), so tests can mint for a wrong audience.
    resourceServer: { ...resourceServer(resource, alg), identifier: () => resource },
  });
  const value = await token.save();
  const expiresIn = iat + ttl - Math.floor(Date.now() / 1000);
  ctx.body = { access_token: value, token_type: 'Bearer', expires_in: expiresIn, scope };
}, ['account', 'resource', 'scope', 'ttl', 'alg', 'shift']);

provider.listen(Number(opt.port), '127.0.0.1', () => {
  console.log(`lab oidc provider ${issuer} users=${opt.user.join(',')} audiences=${opt.audience.join(',')}`);
});
