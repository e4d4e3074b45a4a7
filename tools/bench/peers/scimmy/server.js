// Benchmark peer: a SCIM 2.0 server built on scimmy + scimmy-routers (Express), users in memory.
//
//   node server.js [--host 127.0.0.1] [--port 8080] [--token bench-token]
//   (or the environment variables HOST, PORT, SCIM_BEARER_TOKEN)
//
// Base URL: http://HOST:PORT/scim/v2   (Users at /scim/v2/Users)
// Auth:     every request needs "Authorization: Bearer <token>" (default token: bench-token);
//           an empty token (--token "") disables the check.
//
// Users live in a Map keyed by id, in insertion order. The egress handler matches the
// request's filter with scimmy's own Filter class over all users (as scimmy's examples do), then
// cuts the startIndex/count page (see page() below). Only User is declared (no Groups).

import {randomUUID} from "node:crypto";
import {parseArgs} from "node:util";
import express from "express";
import SCIMMY from "scimmy";
import SCIMMYRouters from "scimmy-routers";

const {values: args} = parseArgs({
    options: {
        host: {type: "string", default: process.env.HOST ?? "127.0.0.1"},
        port: {type: "string", default: process.env.PORT ?? "8080"},
        token: {type: "string", default: process.env.SCIM_BEARER_TOKEN ?? "bench-token"},
    },
});

const users = new Map();        // id -> stored user (plain object, as egress returns it)
const userNames = new Map();    // lower-cased userName -> id, for the uniqueness check

// Turns scimmy's validated schema instance into a plain object without empty attributes.
function plain(instance) {
    return JSON.parse(JSON.stringify(instance));
}

function notFound(id) {
    return new SCIMMY.Types.Error(404, null, `Resource ${id} not found`);
}

// Pages the matches in egress, as scimmy's egress documentation suggests (findMany(filter,
// constraints)), so that only the page is rendered through the User schema. scimmy's ListResponse
// takes totalResults from the array's length and skips holes, so the page is returned as a sparse
// array of length totalResults holding the page at its positions (the sparse-array use described in
// scimmy's PR #71). scimmy 1.3.5's ListResponse offsets such an array once more unless
// startIndex == 1, the page is shorter than startIndex, or it is the last page; in the other cases,
// and when sortBy is given (ListResponse sorts what it gets), the whole match list is returned and
// scimmy sorts and pages it itself.
function page(resource, matches) {
    const {sortBy, startIndex = 1, count = 20} = resource.constraints ?? {};
    if (sortBy !== undefined) return matches;
    const total = matches.length;
    const start = Math.max(startIndex, 1);
    const items = matches.slice(start - 1, start - 1 + count);
    if (!(start === 1 || items.length < start || total === items.length + start - 1)) return matches;
    const sparse = new Array(total);
    items.forEach((item, i) => { sparse[start - 1 + i] = item; });
    return sparse;
}

SCIMMY.Resources.declare(SCIMMY.Resources.User)
    // POST (no resource.id) creates; PUT and PATCH (resource.id set) replace the stored user.
    .ingress((resource, instance) => {
        const now = new Date().toISOString();
        const data = plain(instance);
        delete data.id;
        delete data.meta;
        const key = String(data.userName ?? "").toLowerCase();
        const holder = userNames.get(key);

        if (resource.id) {
            const current = users.get(resource.id);
            if (!current) throw notFound(resource.id);
            if (holder !== undefined && holder !== resource.id)
                throw new SCIMMY.Types.Error(409, "uniqueness", `userName ${data.userName} is already taken`);
            const updated = {
                ...data,
                id: resource.id,
                meta: {resourceType: "User", created: current.meta.created, lastModified: now},
            };
            userNames.delete(String(current.userName ?? "").toLowerCase());
            userNames.set(key, resource.id);
            users.set(resource.id, updated);
            return updated;
        }

        if (holder !== undefined)
            throw new SCIMMY.Types.Error(409, "uniqueness", `userName ${data.userName} is already taken`);
        const id = randomUUID();
        const created = {...data, id, meta: {resourceType: "User", created: now, lastModified: now}};
        users.set(id, created);
        userNames.set(key, id);
        return created;
    })
    // GET by id returns one user; a list GET returns every user that the filter matches.
    .egress((resource) => {
        if (resource.id) {
            const user = users.get(resource.id);
            if (!user) throw notFound(resource.id);
            return user;
        }
        const all = [...users.values()];
        return page(resource, resource.filter ? resource.filter.match(all) : all);
    })
    .degress((resource) => {
        const user = users.get(resource.id);
        if (!user) throw notFound(resource.id);
        users.delete(resource.id);
        userNames.delete(String(user.userName ?? "").toLowerCase());
    });

const app = express();
app.disable("x-powered-by");
app.use("/scim/v2", new SCIMMYRouters({
    type: "bearer",
    // Absolute meta.location URLs (scimmy's default is a path relative to the host).
    baseUri: (request) => `${request.protocol}://${request.get("host")}`,
    handler: (request) => {
        if (!args.token) return undefined;
        if (request.header("Authorization") !== `Bearer ${args.token}`)
            throw new Error("Authorization failed: expected a valid bearer token");
        return undefined;
    },
}));

const server = app.listen(Number(args.port), args.host, () => {
    console.log(`scimmy peer: serving SCIM on http://${args.host}:${args.port}/scim/v2`);
});

for (const signal of ["SIGINT", "SIGTERM"]) {
    process.on(signal, () => {
        server.closeAllConnections();
        process.exit(0);
    });
}
