/*
 * netlink.c: ctnetlink messages (a dump's or an event socket's buffers).
 *
 * Each CT_NEW message is decoded into an entry as ctdoctor.sources.ctnetlink.decode_entry reads
 * it, then counted like a listing line (take_batch), or, for flush, selected and turned into a
 * CT_DELETE request. Every attribute is bounds-checked against its message; nothing here touches
 * Python objects: it runs without the GIL.
 */
#include "fastscan.h"
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

typedef struct { const unsigned char *p; int n; } nla;

static void nla_parse(const unsigned char *p, int len, nla *out, int max) {
    for (int i = 0; i < max; i++) { out[i].p = NULL; out[i].n = 0; }
    int off = 0;
    while (off + 4 <= len) {
        uint16_t l, t;
        memcpy(&l, p + off, 2); memcpy(&t, p + off + 2, 2);
        if (l < 4 || off + l > len) break;
        t &= 0x3fff;
        if (t < max) { out[t].p = p + off + 4; out[t].n = l - 4; }
        off += (l + 3) & ~3;
    }
}

static unsigned be16(const unsigned char *p) { return (p[0] << 8) | p[1]; }
static unsigned long be32(const unsigned char *p) {
    return ((unsigned long)p[0] << 24) | ((unsigned long)p[1] << 16) | ((unsigned long)p[2] << 8) | p[3];
}
static unsigned long long be64(const unsigned char *p) {
    return ((unsigned long long)be32(p) << 32) | be32(p + 4);
}

static const char *TCPS[] = {"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",
                             "TIME_WAIT", "CLOSE", "SYN_SENT2"};
static const char *SCTPS[] = {"NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT",
                              "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT", "HEARTBEAT_SENT", "HEARTBEAT_ACKED"};
static const char *DCCPS[] = {"NONE", "REQUEST", "RESPOND", "PARTOPEN", "OPEN", "CLOSEREQ", "CLOSING", "TIMEWAIT",
                              "IGNORE", "INVALID"};

static const char *proto_name(int n) {
    switch (n) {
    case 1: return "icmp"; case 6: return "tcp"; case 17: return "udp"; case 33: return "dccp";
    case 47: return "gre"; case 58: return "icmpv6"; case 132: return "sctp"; case 136: return "udplite";
    }
    return "unknown";
}

/* Text the entry's spans point to when it comes from netlink. */
typedef struct { char addr[4][48]; char sport[8], dport[8], mark[16], zone[8], state[16], proto[4]; } nl_text;

/* Which of an entry's text fields some aggregator reads (a key field or a filter): the netlink
   decoder formats only those, so a tally by state or protocol never prints an address. */
enum { NEED_ADDR0 = 1, NEED_ADDR1 = 2, NEED_ADDR2 = 4, NEED_ADDR3 = 8, NEED_PORTS = 16, NEED_MARK = 32,
       NEED_ZONE = 64 };

static int needs_of(Aggregator **aggs, int na) {
    int need = 0;
    for (int i = 0; i < na; i++) {
        Aggregator *a = aggs[i];
        if (a->port >= 0) need |= NEED_PORTS;
        for (int f = 0; f < a->nfields; f++) {
            switch (a->fields[f]) {
            case F_SRC: need |= NEED_ADDR0; break;
            case F_DST: need |= NEED_ADDR1; break;
            case F_RSRC: need |= NEED_ADDR2; break;
            case F_RDST: need |= NEED_ADDR3; break;
            case F_SPORT: case F_DPORT: need |= NEED_PORTS; break;
            case F_MARK: need |= NEED_MARK; break;
            case F_ZONE: need |= NEED_ZONE; break;
            }
        }
    }
    return need;
}

/* An IPv4 address as inet_ntop prints it, without its locale and bounds machinery. */
static Py_ssize_t ntop4(const unsigned char *a, char *out) {
    char *o = out;
    for (int i = 0; i < 4; i++) {
        unsigned v = a[i];
        if (i) *o++ = '.';
        if (v >= 100) { *o++ = (char)('0' + v / 100); v %= 100; *o++ = (char)('0' + v / 10); *o++ = (char)('0' + v % 10); }
        else if (v >= 10) { *o++ = (char)('0' + v / 10); *o++ = (char)('0' + v % 10); }
        else *o++ = (char)('0' + v);
    }
    *o = 0;
    return o - out;
}

/* A number without leading zeros, as the text listings print it. */
static Py_ssize_t utoa(unsigned long v, char *out) {
    char tmp[24];
    int n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    out[n] = 0;
    return n;
}

/* One tuple: addresses into e (slots k, k+1) and, for the original tuple, the ports; returns the
   protocol number or -1 when the tuple is malformed. zone: CTA_TUPLE_ZONE or -1. */
static int nl_tuple(nla t, entry *e, int k, nl_text *tx, int orig, int *zone, int need) {
    nla a[8], ip[8], pr[16];
    nla_parse(t.p, t.n, a, 8);
    *zone = -1;
    if (!a[1].p) return -1;
    nla_parse(a[1].p, a[1].n, ip, 8);
    int fam;
    const unsigned char *s, *d;
    if (ip[1].p && ip[2].p && ip[1].n == 4 && ip[2].n == 4) { fam = AF_INET; s = ip[1].p; d = ip[2].p; }
    else if (ip[3].p && ip[4].p && ip[3].n == 16 && ip[4].n == 16) { fam = AF_INET6; s = ip[3].p; d = ip[4].p; }
    else return -1;
    for (int x = 0; x < 2; x++) {
        const unsigned char *src = x ? d : s;
        memset(e->bin[k + x], 0, 16);
        memcpy(e->bin[k + x], src, fam == AF_INET ? 4 : 16);
        e->fam[k + x] = fam;
        /* IPv6 keys are printed from bin (ntop6); an IPv4 one from this text, made only when read */
        if (fam == AF_INET && (need & (NEED_ADDR0 << (k + x)))) {
            e->addr[k + x].n = ntop4(src, tx->addr[k + x]);
            e->addr[k + x].p = tx->addr[k + x];
        }
    }
    int proto = 0;  /* no CTA_TUPLE_PROTO: protocol 0, "unknown", as decode_entry reads it */
    if (a[2].p) {
        nla_parse(a[2].p, a[2].n, pr, 16);
        if (!pr[1].p || pr[1].n < 1) return -1;
        proto = pr[1].p[0];
        if (!pr[2].p != !pr[3].p || (pr[2].p && (pr[2].n < 2 || pr[3].n < 2))) return -1;
        /* ports travel in CTA_PROTO_SRC/DST_PORT; GRE's keys too (they are not ports) */
        if (orig && proto != 47 && pr[2].p && (need & NEED_PORTS)) {
            e->sport.n = utoa(be16(pr[2].p), tx->sport);
            e->sport.p = tx->sport;
            e->dport.n = utoa(be16(pr[3].p), tx->dport);
            e->dport.p = tx->dport;
        }
    }
    if (a[3].p && a[3].n >= 2) *zone = (int)be16(a[3].p);
    return proto;
}

/* A CT_NEW message's attributes (after nfgenmsg) into e, as ctnetlink.decode_entry and
   top.entry_fields read them; -1 when malformed. */
static int nl_entry(const unsigned char *p, int len, int family, entry *e, nl_text *tx, int need) {
    nla a[32];
    memset(e, 0, sizeof(*e));
    nla_parse(p, len, a, 32);
    int zo, zr;
    if (!a[1].p || !a[2].p) return -1;
    int proto = nl_tuple(a[1], e, 0, tx, 1, &zo, need);
    if (proto < 0 || nl_tuple(a[2], e, 2, tx, 0, &zr, need) < 0) return -1;
    e->l3.p = family == AF_INET ? "ipv4" : "ipv6";
    e->l3.n = 4;
    e->proto.p = proto_name(proto);
    if (strcmp(e->proto.p, "unknown") == 0) {  /* a protocol with no name: its number, as the text readers do */
        snprintf(tx->proto, sizeof(tx->proto), "%d", proto & 255);
        e->proto.p = tx->proto;
    }
    e->proto.n = (Py_ssize_t)strlen(e->proto.p);
    unsigned long status = a[3].p && a[3].n >= 4 ? be32(a[3].p) : 0;
    e->hw_offload = (status & (1 << 15)) != 0;
    e->offload = !e->hw_offload && (status & (1 << 14)) != 0;
    e->unreplied = !(status & (1 << 1));
    e->assured = (status & (1 << 2)) && !e->offload && !e->hw_offload;
    if (a[4].p) {
        nla pi[4], st[4];
        nla_parse(a[4].p, a[4].n, pi, 4);
        const char **names = NULL; int k = 0;
        if (pi[1].p) { names = TCPS; k = 1; }
        else if (pi[3].p) { names = SCTPS; k = 3; }
        else if (pi[2].p) { names = DCCPS; k = 2; }
        if (names) {
            nla_parse(pi[k].p, pi[k].n, st, 4);
            if (st[1].p && st[1].n >= 1) {
                int i = st[1].p[0];
                if (i < 10) { e->state.p = names[i]; e->state.n = (Py_ssize_t)strlen(names[i]); }
                else { e->state.n = snprintf(tx->state, sizeof tx->state, "%d", i); e->state.p = tx->state; }
            }
        }
    }
    if (a[8].p && a[8].n >= 4 && (need & NEED_MARK)) {
        e->mark.n = utoa(be32(a[8].p), tx->mark);
        e->mark.p = tx->mark;
    } else { e->mark.p = ""; e->mark.n = 0; }  /* no CTA_MARK: entry_fields gives b"" */
    if (need & NEED_ZONE) {
        int zone = a[18].p && a[18].n >= 2 ? (int)be16(a[18].p) : zo >= 0 ? zo : zr >= 0 ? zr : 0;
        e->zone.n = utoa((unsigned long)zone, tx->zone);
        e->zone.p = tx->zone;
    } else { e->zone.p = ""; e->zone.n = 0; }
    for (int d = 0; d < 2; d++) {
        nla c = a[9 + d], k[4];
        if (!c.p) continue;
        nla_parse(c.p, c.n, k, 4);
        if (k[1].p && k[2].p && k[1].n >= 8 && k[2].n >= 8) {
            if (d == 0) { e->opk = be64(k[1].p); e->ob = be64(k[2].p); }
            else { e->rpk = be64(k[1].p); e->rb = be64(k[2].p); }
            e->acct = 1;
        } else return -1;
    }
    return 0;
}

/* Read every conntrack message of a netlink receive buffer into each aggregator, BATCH at a time. */
void feed_nl(Aggregator **aggs, int na, const unsigned char *p, Py_ssize_t n, char *keys, nl_read *out) {
    Py_ssize_t off = 0;
    entry ents[BATCH];
    nl_text tx[BATCH];
    int k = 0, need = needs_of(aggs, na);
    memset(out, 0, sizeof(*out));
    while (off + 16 <= n) {
        uint32_t len; uint16_t type;
        memcpy(&len, p + off, 4); memcpy(&type, p + off + 4, 2);
        if (len < 16 || off + len > n) break;
        if (type == 3) { out->done = 1; break; }
        if (type == 2 && len >= 20) { int32_t x; memcpy(&x, p + off + 16, 4); if (x) { out->err = -x; break; } }
        if ((type >> 8) == 1) {  /* a ctnetlink message: a dump's or an event's entry */
            if (len < 20 || nl_entry(p + off + 20, (int)len - 20, p[off + 16], &ents[k], &tx[k], need) < 0)
                out->malformed++;
            else {
                out->entries++;
                if (++k == BATCH) {
                    if (take_batch(aggs, na, ents, k, keys) < 0) { out->nomem = 1; return; }
                    k = 0;
                }
            }
        }
        off += (len + 3) & ~3;
    }
    if (k && take_batch(aggs, na, ents, k, keys) < 0) out->nomem = 1;
}

/* Whether the buffer holds NLMSG_DONE (the end of a dump); *err: an NLMSG_ERROR's error, or 0.
   The headers only: the dump's reader asks it of every buffer. */
int nl_scan_done(const unsigned char *p, Py_ssize_t n, int *err) {
    Py_ssize_t off = 0;
    *err = 0;
    while (off + 16 <= n) {
        uint32_t len; uint16_t type;
        memcpy(&len, p + off, 4); memcpy(&type, p + off + 4, 2);
        if (len < 16 || off + len > n) break;
        if (type == 3) return 1;
        if (type == 2 && len >= 20) { int32_t x; memcpy(&x, p + off + 16, 4); if (x) { *err = -x; return 0; } }
        off += (len + 3) & ~3;
    }
    return 0;
}

/* flush's selection (netlink_select in module.c). Each entry of a dump buffer is decoded and put
   through a's filters (states, protos, port, networks: the same rules as top's); an ASSURED
   ESTABLISHED TCP entry is kept (counted as protected) when asked. For every entry that passes,
   a counts it (by its key: the dry run's breakdown) and a CT_DELETE request is appended to *out:
   the dump's own CTA_TUPLE_ORIG, CTA_ZONE and CTA_ID attributes copied as they came (the kernel
   deletes that entry only, never one re-created with the same tuple since), flags REQUEST|ACK,
   sequence numbers from seq on. *out is malloc'd (NULL with res->nomem when memory ran out). */
void select_nl(Aggregator *a, const unsigned char *p, Py_ssize_t n, int protect, unsigned int seq,
               unsigned int ack_every, unsigned char **outp, size_t *usedp, nl_select *res) {
    Py_ssize_t off = 0;
    size_t cap = (size_t)n / 2 + 64, used = 0;
    unsigned char *out = malloc(cap);
    char *key = malloc(KEYMAX);
    memset(res, 0, sizeof(*res));
    *outp = NULL; *usedp = 0;
    if (!out || !key) { free(out); free(key); res->nomem = 1; return; }
    if (ack_every < 1) ack_every = 1;
    int need = needs_of(&a, 1);
    while (off + 16 <= n) {
        uint32_t len; uint16_t type;
        memcpy(&len, p + off, 4); memcpy(&type, p + off + 4, 2);
        if (len < 16 || off + len > n) break;
        if (type == 3) { res->done = 1; break; }
        if (type == 2 && len >= 20) { int32_t x; memcpy(&x, p + off + 16, 4); if (x) { res->err = -x; break; } }
        if ((type >> 8) == 1) {
            entry e;
            nl_text tx;
            const unsigned char *body = p + off + 20;
            int blen = (int)len - 20;
            if (len < 20 || nl_entry(body, blen, p[off + 16], &e, &tx, need) < 0) { res->malformed++; goto next; }
            res->entries++;
            if (protect && e.assured && e.state.p && span_eq(e.state, "ESTABLISHED")) { res->protected_++; goto next; }
            ready r;
            if (!prepare(a, &e, key, &r)) goto next;
            if (add_counts(a, r.kl, r.klen, r.llen, r.h, 1, r.opk, r.ob, r.rpk, r.rb) < 0) { res->nomem = 1; break; }
            res->matched++;
            nla at[32];
            nla_parse(body, blen, at, 32);
            /* the attributes as they came, each with its 4-byte header (nla_parse points past it) */
            size_t need_b = 20 + 8 + (size_t)at[1].n + (at[18].p ? 8 + (size_t)at[18].n : 0)
                            + (at[12].p ? 8 + (size_t)at[12].n : 0) + 16;
            if (used + need_b > cap) {
                size_t nc = (cap + need_b) * 2;
                unsigned char *grown = realloc(out, nc);
                if (!grown) { res->nomem = 1; break; }
                out = grown; cap = nc;
            }
            unsigned char *m = out + used;
            size_t w = 20;
            int ids[3] = {1, 18, 12};  /* CTA_TUPLE_ORIG, CTA_ZONE, CTA_ID */
            for (int k = 0; k < 3; k++) {
                nla x = at[ids[k]];
                if (!x.p) continue;
                size_t alen = (size_t)x.n + 4, padded = (alen + 3) & ~(size_t)3;
                memcpy(m + w, x.p - 4, alen);
                memset(m + w + alen, 0, padded - alen);
                w += padded;
            }
            uint32_t mlen = (uint32_t)w;
            /* CTNETLINK CT_DELETE; REQUEST, and ACK on every ack_every-th: the kernel answers the others
               only when they fail, and a batch is done when its last one is acknowledged */
            uint32_t mseq = seq++, pid = 0;
            uint16_t mtype = (1 << 8) | 2, mflags = 0x1 | (mseq % ack_every == 0 ? 0x4 : 0);
            memcpy(m, &mlen, 4); memcpy(m + 4, &mtype, 2); memcpy(m + 6, &mflags, 2);
            memcpy(m + 8, &mseq, 4); memcpy(m + 12, &pid, 4);
            m[16] = p[off + 16]; m[17] = 0; m[18] = 0; m[19] = 0;  /* nfgenmsg: the entry's family */
            used += w;
        }
    next:
        off += (len + 3) & ~3;
    }
    free(key);
    if (res->nomem) { free(out); return; }
    *outp = out; *usedp = used;
}
