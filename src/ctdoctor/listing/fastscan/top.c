/*
 * top.c: top(limit), the rows of `ctdoctor top`.
 *
 * Rows are keys; a key's records (one per label) are grouped in three passes: (1) each record's
 * group, by the key alone, into gid[], with the group's count; (2) the best groups by count, then
 * key bytes (a total order on distinct keys, so the rows never depend on the hash seed or on
 * qsort's stability); (3) over the records in order, the sums and label counts of the winners
 * only. Passes 1 and 2 are plain C; pass 3 and the rows make Python objects, each one checked:
 * on a failure everything made so far is released and NULL returned with the exception set.
 */
#define _GNU_SOURCE  /* qsort_r */
#include "fastscan.h"
#include <stdlib.h>

/* What the comparison needs, passed to it (no static globals: two threads may sort at once). */
typedef struct {
    const Aggregator *a;
    const uint32_t *first;   /* group -> its first record */
    const long long *count;  /* group -> entries */
} order_ctx;

/* < 0 when group g comes before group h: more entries first, then the smaller key bytes. */
static inline int cmp_group(const order_ctx *o, uint32_t g, uint32_t h) {
    if (o->count[g] != o->count[h]) return o->count[g] > o->count[h] ? -1 : 1;
    const slot *a = &o->a->slots[o->first[g]], *b = &o->a->slots[o->first[h]];
    size_t n = a->klen < b->klen ? a->klen : b->klen;
    int c = memcmp(slot_key(a), slot_key(b), n);
    if (c) return c;
    return a->klen < b->klen ? -1 : (a->klen > b->klen ? 1 : 0);
}

static int cmp_sort(const void *x, const void *y, void *ctx) {
    return cmp_group(ctx, *(const uint32_t *)x, *(const uint32_t *)y);
}

/* Pass 1: each record's group (by key bytes, without the label) into gid, each group's first
   record and count; the number of groups, or -1 on no memory. */
static long long group_records(const Aggregator *a, uint32_t *gid, uint32_t *first, long long *count) {
    size_t used = a->used, tcap = 16;
    while (tcap < used * 2 + 2) tcap <<= 1;
    uint32_t *tab = calloc(tcap, sizeof(uint32_t));  /* group + 1, 0 empty */
    uint64_t *kh = malloc((used + 1) * sizeof(uint64_t));
    if (!tab || !kh) { free(tab); free(kh); return -1; }
    size_t ng = 0;
    for (size_t i = 0; i < used; i++) kh[i] = hash_bytes(slot_key(&a->slots[i]), a->slots[i].klen, fs_seed);
    for (size_t i = 0; i < used; i++) {
        if (i + 8 < used) __builtin_prefetch(&tab[kh[i + 8] & (tcap - 1)]);
        const slot *s = &a->slots[i];
        size_t j = kh[i] & (tcap - 1);
        uint32_t g;
        for (;;) {
            uint32_t t = tab[j];
            if (!t) { g = (uint32_t)ng++; tab[j] = g + 1; first[g] = (uint32_t)i; break; }
            const slot *f = &a->slots[first[t - 1]];
            if (kh[first[t - 1]] == kh[i] && f->klen == s->klen && memcmp(slot_key(f), slot_key(s), s->klen) == 0) {
                g = t - 1;
                break;
            }
            j = (j + 1) & (tcap - 1);
        }
        gid[i] = g;
        count[g] += s->count;
    }
    free(tab); free(kh);
    return (long long)ng;
}

/* Pass 2: the n best of ng groups into order[0..n), sorted. When n < ng, a heap whose root is the
   worst of the best so far keeps the work at ng log n. */
static void best_groups(const order_ctx *o, size_t ng, size_t n, uint32_t *order) {
    if (n == ng) {
        for (size_t g = 0; g < ng; g++) order[g] = (uint32_t)g;
        qsort_r(order, ng, sizeof(uint32_t), cmp_sort, (void *)o);
        return;
    }
    size_t hn = 0;
    for (uint32_t g = 0; g < ng; g++) {
        if (hn < n) {
            size_t c = hn++;
            order[c] = g;
            while (c > 0) {
                size_t p = (c - 1) / 2;
                if (cmp_group(o, order[c], order[p]) <= 0) break;
                uint32_t t = order[c]; order[c] = order[p]; order[p] = t; c = p;
            }
        } else if (cmp_group(o, g, order[0]) < 0) {
            order[0] = g;
            size_t c = 0;
            for (;;) {
                size_t l = 2 * c + 1, r = l + 1, m = c;
                if (l < hn && cmp_group(o, order[l], order[m]) > 0) m = l;
                if (r < hn && cmp_group(o, order[r], order[m]) > 0) m = r;
                if (m == c) break;
                uint32_t t = order[c]; order[c] = order[m]; order[m] = t; c = m;
            }
        }
    }
    qsort_r(order, n, sizeof(uint32_t), cmp_sort, (void *)o);
}

/* Pass 3's Python side: label -> count into the winner's dict. 0, or -1 with an exception. */
static int add_label(PyObject *labels, const slot *s) {
    PyObject *k = PyBytes_FromStringAndSize(slot_key(s) + s->klen, s->llen);
    if (!k) return -1;
    PyObject *v = PyLong_FromLongLong(s->count);
    int r = v ? PyDict_SetItem(labels, k, v) : -1;
    Py_DECREF(k);
    Py_XDECREF(v);
    return r;
}

/* top(limit) -> (groups, [(key, count, opk, ob, rpk, rb, {label: count})]) sorted by count, then
   key bytes; limit <= 0: every group. */
PyObject *top_rows(Aggregator *a, Py_ssize_t limit) {
    size_t used = a->used;
    PyObject *rows = NULL, *res = NULL, **labels = NULL;
    uint32_t *order = NULL;
    int64_t *rank = NULL;
    sums *tot = NULL;
    size_t n = 0;
    uint32_t *gid = malloc((used + 1) * sizeof(uint32_t));
    uint32_t *first = malloc((used + 1) * sizeof(uint32_t));
    long long *count = calloc(used + 1, sizeof(long long));
    if (!gid || !first || !count) goto nomem;
    long long ngl = group_records(a, gid, first, count);
    if (ngl < 0) goto nomem;
    size_t ng = (size_t)ngl;
    n = (limit > 0 && (size_t)limit < ng) ? (size_t)limit : ng;
    order = malloc((ng + 1) * sizeof(uint32_t));
    rank = malloc((ng + 1) * sizeof(int64_t));
    labels = calloc(n + 1, sizeof(PyObject *));
    tot = calloc(n + 1, sizeof(sums));
    if (!order || !rank || !labels || !tot) goto nomem;
    order_ctx o = { a, first, count };
    best_groups(&o, ng, n, order);
    for (size_t g = 0; g < ng; g++) rank[g] = -1;
    for (size_t r = 0; r < n; r++) rank[order[r]] = (int64_t)r;
    for (size_t r = 0; r < n; r++)
        if (!(labels[r] = PyDict_New())) goto done;
    for (size_t i = 0; i < used; i++) {  /* pass 3: in record order, only the winners */
        int64_t r = rank[gid[i]];
        if (r < 0) continue;
        const slot *s = &a->slots[i];
        const sums *u = sums_of(a, i);
        sums *t = &tot[r];
        t->opk = sat_add(t->opk, u->opk); t->ob = sat_add(t->ob, u->ob);
        t->rpk = sat_add(t->rpk, u->rpk); t->rb = sat_add(t->rb, u->rb);
        if (add_label(labels[r], s) < 0) goto done;
    }
    if (!(rows = PyList_New((Py_ssize_t)n))) goto done;
    for (size_t r = 0; r < n; r++) {
        const slot *f = &a->slots[first[order[r]]];
        PyObject *row = Py_BuildValue("(y#LKKKKO)", slot_key(f), (Py_ssize_t)f->klen, count[order[r]], tot[r].opk,
                                      tot[r].ob, tot[r].rpk, tot[r].rb, labels[r]);
        if (!row) goto done;
        PyList_SET_ITEM(rows, (Py_ssize_t)r, row);  /* steals row */
    }
    res = Py_BuildValue("(nO)", (Py_ssize_t)ng, rows);
    goto done;
nomem:
    PyErr_NoMemory();
done:
    if (labels)
        for (size_t r = 0; r < n; r++) Py_XDECREF(labels[r]);
    Py_XDECREF(rows);  /* a list with unset items frees as well */
    free(labels); free(tot); free(order); free(rank); free(gid); free(first); free(count);
    return res;
}
