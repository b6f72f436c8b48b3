/*
 * aggregate.c: entries into tables.
 *
 * prepare() puts an entry through an Aggregator's filters and makes its key; take_batch() counts a
 * batch of them into one or more tables; feed_text() reads listing text into them; merge_into()
 * adds one table to another. All of it runs without the GIL, on tables module.c has marked busy
 * (so no other thread feeds, reads or re-initialises them meanwhile). The states and protos
 * tuples are read here without the GIL: they are immutable bytes, kept alive by the Aggregator.
 */
#define _GNU_SOURCE  /* memmem */
#include "fastscan.h"
#include <stdlib.h>
#include <sys/socket.h>

static int in_nets(const unsigned char *bin, int fam, struct net *nets, int n) {
    for (int i = 0; i < n; i++) {
        if (nets[i].family != fam) continue;
        int bits = nets[i].prefix, full = bits / 8, rem = bits % 8;
        if (memcmp(bin, nets[i].addr, full) != 0) continue;
        if (rem && ((bin[full] ^ nets[i].addr[full]) & (0xff << (8 - rem)) & 0xff)) continue;
        return 1;
    }
    return 0;
}


static int tuple_has(PyObject *tup, span s) {
    Py_ssize_t n = PyTuple_GET_SIZE(tup);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyTuple_GET_ITEM(tup, i);
        if (PyBytes_GET_SIZE(b) == s.n && memcmp(PyBytes_AS_STRING(b), s.p, s.n) == 0) return 1;
    }
    return 0;
}

static inline void key_put(char *key, size_t *k, const char *p, size_t n) {
    if (*k + n > KEYMAX - 64) n = KEYMAX - 64 - *k;  /* cannot happen: every field is bounded */
    memcpy(key + *k, p, n);
    *k += n;
}

/* Filters, then the key (into buf, KEYMAX bytes) and its hash; 1 when the entry is counted. */
int prepare(Aggregator *a, const entry *e, char *key, ready *r) {
    size_t k = 0;
    span label = label_of(e);
    a->total++;
    if (e->acct) a->accounting = 1;
    /* a sample by position in the read (a dump's order follows the kernel's hash, not the keys) */
    if (a->every > 1 && a->tick++ % a->every) return 0;
    if (a->protos && !tuple_has(a->protos, e->proto)) return 0;
    if (a->states) {
        int ok = tuple_has(a->states, label);
        if (!ok && e->unreplied) { span u = {"UNREPLIED", 9}; ok = tuple_has(a->states, u); }
        if (!ok && e->assured) { span u = {"ASSURED", 7}; ok = tuple_has(a->states, u); }
        if (!ok) return 0;
    }
    if (a->port >= 0) {
        unsigned long long sp, dp;
        if (!((e->sport.n && number(e->sport, 5, 65535, &sp) == 0 && sp == (unsigned long long)a->port) ||
              (e->dport.n && number(e->dport, 5, 65535, &dp) == 0 && dp == (unsigned long long)a->port))) return 0;
    }
    if (a->nsrc && !in_nets(e->bin[0], e->fam[0], a->src_nets, a->nsrc)) return 0;
    if (a->ndst && !in_nets(e->bin[1], e->fam[1], a->dst_nets, a->ndst)) return 0;
    a->matched++;
    for (int f = 0; f < a->nfields; f++) {
        if (f) key_put(key, &k, "\x1f", 1);
        const char *p = "";
        size_t n = 0;
        char v6[48];
        int ai = -1;
        switch (a->fields[f]) {
        case F_SRC: ai = 0; break;
        case F_DST: ai = 1; break;
        case F_RSRC: ai = 2; break;
        case F_RDST: ai = 3; break;
        case F_SPORT: p = e->sport.p; n = (size_t)e->sport.n; break;
        case F_DPORT: p = e->dport.p; n = (size_t)e->dport.n; break;
        case F_STATE: p = label.p; n = (size_t)label.n; break;
        case F_PROTO: p = e->proto.p; n = (size_t)e->proto.n; break;
        case F_ZONE: p = e->zone.p; n = (size_t)e->zone.n; break;
        case F_MARK: p = e->mark.p; n = (size_t)e->mark.n; break;
        case F_L3:
            if (e->l3.n) { p = e->l3.p; n = (size_t)e->l3.n; }
            else { p = e->fam[0] == AF_INET6 ? "ipv6" : "ipv4"; n = 4; }
            break;
        }
        if (ai >= 0) {
            if (e->fam[ai] == AF_INET6) {  /* RFC 5952, as conntrack prints it */
                n = ntop6(e->bin[ai], v6);
                p = v6;
            } else { p = e->addr[ai].p; n = (size_t)e->addr[ai].n; }
        }
        key_put(key, &k, p, n);
    }
    memcpy(key + k, label.p, (size_t)label.n);
    r->kl = key; r->klen = k; r->llen = (size_t)label.n;
    r->h = key_hash(key, k, (size_t)label.n);
    r->opk = e->opk; r->ob = e->ob; r->rpk = e->rpk; r->rb = e->rb;
    return 1;
}

/* Entries of a batch into each aggregator. Lookups in a big table wait on memory: the index
   entries of the whole batch are fetched first, then the records they point to, then each is
   counted, so the waits overlap instead of adding up. 0, or -1 on no memory. */
int take_batch(Aggregator **aggs, int na, entry *ents, int n, char *keys) {
    ready rs[BATCH];
    int keep[BATCH];
    for (int i = 0; i < na; i++) {
        Aggregator *a = aggs[i];
        for (int j = 0; j < n; j++) {
            keep[j] = prepare(a, &ents[j], keys + (size_t)j * KEYMAX, &rs[j]);
            if (keep[j] && a->cap) __builtin_prefetch(&a->index[rs[j].h & (a->cap - 1)]);
        }
        for (int j = 0; j < n; j++) {
            if (!keep[j] || !a->cap) continue;
            uint64_t ix = a->index[rs[j].h & (a->cap - 1)];
            if (ix) __builtin_prefetch(&a->slots[(ix & 0xFFFFFFFFULL) - 1]);
        }
        for (int j = 0; j < n; j++)
            if (keep[j] && add_counts(a, rs[j].kl, rs[j].klen, rs[j].llen, rs[j].h, 1, rs[j].opk, rs[j].ob,
                                      rs[j].rpk, rs[j].rb) < 0) return -1;
    }
    return 0;
}

/* ---- reading text ---------------------------------------------------------------------------- */

static int is_noise(const char *s, const char *te) {  /* conntrack-tools' or sysctl's stderr */
    return memmem(s, te - s, "(conntrack-tools)", 17) || memmem(s, te - s, "nfct_labelmap", 13);
}

/* Read every line of buf into each aggregator, BATCH entries at a time. A line parse_canon
   declines is checked for NUL bytes (binary data: unreadable, and reported) before the general
   rules read it; an unreadable one is checked for conntrack-tools' stderr. */
void feed_text(Aggregator **aggs, int na, const char *p, const char *end, int skip_first_bad,
               char *keys, text_read *out) {
    long long lines = 0;
    int first = 1, n = 0;
    entry ents[BATCH];
    memset(out, 0, sizeof(*out));
    while (p < end) {
        const char *nl = memchr(p, '\n', end - p);
        const char *le = nl ? nl : end;
        lines++;
        const char *s = p;
        while (s < le && (*s == ' ' || *s == '\r')) s++;
        const char *te = le;
        while (te > s && (te[-1] == ' ' || te[-1] == '\r')) te--;
        if (s < te) {
            int ok = parse_canon(s, te, &ents[n]) == 0;
            if (!ok) {
                if (memchr(s, 0, te - s)) {
                    if (!out->binary_line) out->binary_line = lines;
                } else ok = parse_line(s, te, &ents[n]) == 0;
            }
            if (!ok) {
                if (!(first && skip_first_bad)) { out->bad++; if (!out->first_bad) out->first_bad = lines; }
                if (!out->noise && is_noise(s, te)) out->noise = 1;
            } else if (++n == BATCH) {
                if (take_batch(aggs, na, ents, n, keys) < 0) { out->nomem = 1; return; }
                n = 0;
            }
            first = 0;
        }
        p = nl ? nl + 1 : end;
    }
    if (n && take_batch(aggs, na, ents, n, keys) < 0) out->nomem = 1;
    out->lines = lines;
}

/* Add b's records to a, each key prefixed by pre (plen bytes); the records b has now only (a may
   be b). 0, -1 no memory, -2 a key too long for a record. */
int merge_into(Aggregator *a, const Aggregator *b, const char *pre, size_t plen) {
    char stack[KEYMAX];
    size_t used = b->used;
    for (size_t i = 0; i < used; i += BATCH) {
        size_t n = used - i < BATCH ? used - i : BATCH;
        uint64_t hs[BATCH];
        /* as in take_batch: fetch the index entries of a batch before counting them */
        for (size_t j = 0; j < n; j++) {
            const slot *s = &b->slots[i + j];
            if (plen) {
                if (plen + s->klen + s->llen > sizeof stack) { hs[j] = 0; continue; }
                memcpy(stack, pre, plen);
                memcpy(stack + plen, slot_key(s), s->klen + s->llen);
                hs[j] = key_hash(stack, plen + s->klen, s->llen);
            } else hs[j] = s->hash;  /* the same bytes: the same hash (one seed per process) */
            if (a->cap) __builtin_prefetch(&a->index[hs[j] & (a->cap - 1)]);
        }
        for (size_t j = 0; j < n; j++) {
            /* b's slots are read again per record: when a is b, adding may move them */
            const slot *s = &b->slots[i + j];
            const sums *u = sums_of(b, i + j);
            sums uc = *u;
            size_t tl = plen + s->klen + s->llen, kn = plen + s->klen, llen = s->llen;
            long long cnt = s->count;
            if (kn > 0xFFFF) return -2;
            char *kl = tl <= sizeof stack ? stack : malloc(tl);
            if (!kl) return -1;
            memcpy(kl, pre, plen);
            memcpy(kl + plen, slot_key(s), s->klen + s->llen);
            uint64_t h = tl <= sizeof stack ? hs[j] : key_hash(kl, kn, llen);
            int r = add_counts(a, kl, kn, llen, h, cnt, uc.opk, uc.ob, uc.rpk, uc.rb);
            if (kl != stack) free(kl);
            if (r < 0) return -1;
        }
    }
    return 0;
}
