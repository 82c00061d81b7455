// A real OpenID Connect provider (panva's `oidc-provider`) for the tests: discovery, JWKS, and JWT
// access tokens through the client_credentials grant. Configured by a JSON file (argv[2]): issuer URL,
// port, private signing keys (JWKs), clients (id, secret, signing alg, groups), audience, token TTL.
// GET /__jwks_requests says how many times the key set was fetched (the tests count refreshes).
import fs from 'node:fs';
import Provider from 'oidc-provider';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const byId = Object.fromEntries(cfg.clients.map((c) => [c.id, c]));
let jwksRequests = 0;

const provider = new Provider(cfg.issuer, {
  jwks: { keys: cfg.keys },
  clients: cfg.clients.map((c) => ({
    client_id: c.id,
    client_secret: c.secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_post',
  })),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => cfg.audience,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, client) => ({
        scope: 'models',
        audience: cfg.audience,
        accessTokenTTL: cfg.ttl,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: byId[client.clientId].alg } },
      }),
    },
  },
  extraTokenClaims: (ctx, token) => {
    const client = byId[token.clientId];
    return client && client.groups ? { groups: client.groups } : undefined;
  },
  enabledJWA: {
    idTokenSigningAlgValues: ['RS256', 'PS256', 'ES256', 'EdDSA'],
  },
});

provider.on('server_error', (ctx, err) => console.error('server_error', err));

provider.use(async (ctx, next) => {
  if (ctx.path === '/__jwks_requests') {
    ctx.body = { count: jwksRequests };
    return;
  }
  if (ctx.path === '/jwks') jwksRequests += 1;
  await next();
  if (ctx.path === '/jwks' && cfg.jwks_max_age !== undefined) {
    ctx.set('cache-control', `public, max-age=${cfg.jwks_max_age}`);
  }
});

provider.listen(cfg.port, '127.0.0.1', () => {
  console.log(`listening ${cfg.issuer}`);
});
