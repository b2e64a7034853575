/* The DNS server's answers replayed by the kernel (dns.kernel_cache).
 *
 * At tc ingress of the device the home's queries reach netns vproxy on, a
 * plain UDP query over IPv4 or IPv6 without extension headers (one
 * question, no other records but a bare EDNS 0 OPT: no options, no DO bit)
 * is looked up by (client group, qtype, qclass, lower-cased wire name).  A fresh entry is what the server sent
 * for that question: its records and TTL offsets, written by the server
 * (kernel_cache.py) when it answered from its cache.  The answer is built
 * in the query's own skb, as the server's `wire.render` would: the query's
 * ID and question as sent, RD copied, QR|RA|rcode, the records with every
 * TTL lowered by the entry's age, our OPT when the client sent one; then
 * addresses, ports and MACs swapped, checksums computed, and the frame
 * sent back out of the device it came in on.
 *
 * Everything else goes up untouched (TC_ACT_OK): misses, expired entries,
 * entries of a generation their writer has left (it changed policy), a
 * client the server has not placed in a group, an answer past the
 * client's UDP size (the server sets TC), anything unusual in the query.
 * The kernel decides nothing: the server's policy chose every entry.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define KC_NAME_MAX 255       /* wire name with its final zero, as parse_query allows */
#define KC_BODY_MAX 1024      /* records + our OPT, as stored */
#define KC_TTLS 64            /* TTLs an entry rewrites at most */
#define KC_WRITERS 64         /* the main process and its workers */
#define KC_DESTS 4
#define KC_DESTS6 2

#define DNS_QR 0x8000
#define DNS_OPCODE 0x7800
#define DNS_TC 0x0200
#define DNS_RD 0x0100
#define OPT_LEN 11

#define L2 14
#define L3 20
#define L3_6 40
#define L4 8

struct kc_key {
	__u32 group;
	__u16 qtype;
	__u16 qclass;
	__u8 name[KC_NAME_MAX + 1];   /* lower-cased, zero-padded */
};

struct kc_answer {
	__u64 stored_ns;    /* CLOCK_MONOTONIC: the server's time.monotonic() */
	__u64 expires_ns;
	__u32 writer;       /* which process wrote it: kc_gens[writer] must be `gen` */
	__u32 gen;
	__u16 flags;        /* QR | RA | rcode; the query's RD is added */
	__u16 an, ns, ar;   /* counts without our OPT */
	__u16 body_len;     /* the records; our OPT follows them in body[] */
	__u16 ttl_count;
	__u16 edns_max;     /* the server's edns_udp_size */
	__u16 pad;
	__u32 sum_plain;    /* big-endian word sum of body[0:body_len], TTLs as zero */
	__u32 sum_edns;     /* ... of body[0:body_len + 11]: with our OPT */
	__u16 ttl_off[KC_TTLS];   /* from the start of body */
	__u32 ttl[KC_TTLS];       /* as stored */
	__u8 body[KC_BODY_MAX];
};

/* A client's address: IPv6, or IPv4 mapped (::ffff:a.b.c.d), as sent.
 * Two 8-byte words, written and read whole: 6.1 without CAP_PERFMON
 * refuses a 4-byte store into a stack slot that holds a spilled value. */
struct kc_addr {
	__u64 d[2];
};

struct kc_client {
	__u32 group;
	__u32 writer;
	__u32 gen;
	__u32 pad;
	__u64 expires_ns;
};

/* Which destinations the kernel answers as: the gateway's address
 * (dns.intercept: gateway) or any but the fake range (all); over IPv6 the
 * box answers every address it is sent DNS to (::/0) but the fake range. */
struct kc_config {
	__u32 dest[KC_DESTS];       /* network order */
	__u32 dest_mask[KC_DESTS];  /* 0 = unused slot unless dest is 0 too: 0/0 is "any" */
	__u32 dests;
	__u32 fake;                 /* never answered as (the relay's range) */
	__u32 fake_mask;
	__u32 dests6;
	__u64 dest6[KC_DESTS6][2];  /* the address's bytes as sent, read as two words */
	__u64 dest6_mask[KC_DESTS6][2];
	__u64 fake6[2];
	__u64 fake6_mask[2];        /* all zero: no IPv6 fake range */
	/* The device is a veth whose peer is in another namespace: the answer goes
	 * straight into the peer's ingress (bpf_redirect_peer), not out through
	 * the veth and the backlog queue of the CPU. */
	__u32 peer;
	__u32 pad;
};

enum kc_stat {
	KC_HITS,
	KC_MISSES,       /* a plain query, no fresh entry */
	KC_EXPIRED,
	KC_NO_CLIENT,    /* client not placed in a group (or its placement expired) */
	KC_NOT_PLAIN,    /* a query the kernel does not read: the server does */
	KC_TOO_BIG,
	KC_STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct kc_key);
	__type(value, struct kc_answer);
} kc_answers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct kc_addr);      /* the client's address */
	__type(value, struct kc_client);
} kc_clients SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KC_WRITERS);
	__type(key, __u32);
	__type(value, __u32);
} kc_gens SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kc_config);
} kc_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KC_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} kc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct kc_addr);      /* the client */
	__type(value, __u64);             /* answers the kernel gave it */
} kc_client_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct kc_key);       /* the question answered, its group */
	__type(value, __u64);             /* answers the kernel gave it */
} kc_name_hits SEC(".maps");

/* The question and OPT as received, and the key: 530 bytes would not fit
 * the 512-byte stack.  The question is read from this copy, not from the
 * packet: a packet pointer moved by a variable is refused to a loader
 * without CAP_PERFMON (the DNS server has CAP_BPF and CAP_NET_ADMIN). */
#define KC_RAW (KC_NAME_MAX + 4 + OPT_LEN)

/* Bound a helper's length on the very register the call takes.  The C checks
 * before it are on a copy clang may spill to the stack; 6.1's verifier does
 * not carry what a branch learnt to a spilled copy (6.8 and later do), and
 * refuses the call ("R4 min value is outside of the allowed memory range").
 * The values are already checked, so this never changes one. */
#define KC_BOUND(n, lo, hi) \
	asm volatile("if %0 >= %1 goto +1; %0 = %1; if %0 <= %2 goto +1; %0 = %2" \
		     : "+r"(n) : "i"(lo), "i"(hi))
struct kc_scratch {
	struct kc_key key;
	__u8 raw[KC_RAW + 1];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kc_scratch);
} kc_scratch SEC(".maps");

static __always_inline int count(__u32 what, int verdict)
{
	__u64 *n = bpf_map_lookup_elem(&kc_stats, &what);
	if (n)
		*n += 1;
	return verdict;
}

static __always_inline int writer_current(__u32 writer, __u32 gen)
{
	__u32 *now = bpf_map_lookup_elem(&kc_gens, &writer);
	return now && gen && *now == gen;
}

static __always_inline int answers_as(__u32 daddr)
{
	__u32 zero = 0;
	struct kc_config *c = bpf_map_lookup_elem(&kc_config, &zero);
	if (!c)
		return 0;
	if (c->fake_mask && (daddr & c->fake_mask) == c->fake)
		return 0;
	for (int i = 0; i < KC_DESTS; i++) {
		if (i >= c->dests)
			break;
		if ((daddr & c->dest_mask[i]) == c->dest[i])
			return 1;
	}
	return 0;
}

static __always_inline int in6(const __u64 *a, const __u64 *net, const __u64 *mask)
{
	return (a[0] & mask[0]) == net[0] && (a[1] & mask[1]) == net[1];
}

static __always_inline int answers_as6(const __u64 *daddr)
{
	__u32 zero = 0;
	struct kc_config *c = bpf_map_lookup_elem(&kc_config, &zero);
	if (!c)
		return 0;
	if ((c->fake6_mask[0] | c->fake6_mask[1]) && in6(daddr, c->fake6, c->fake6_mask))
		return 0;
	for (int i = 0; i < KC_DESTS6; i++) {
		if (i >= c->dests6)
			break;
		if (in6(daddr, c->dest6[i], c->dest6_mask[i]))
			return 1;
	}
	return 0;
}

/* The big-endian 16-bit words of an address, as a checksum adds them. */
static __always_inline __u32 addr_sum(const struct kc_addr *a)
{
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < 2; i++)
#pragma unroll
		for (int b = 0; b < 64; b += 16)
			sum += bpf_ntohs((__u16)(a->d[i] >> b));
	return sum;
}

/* IPv4 `addr` (network order) as ::ffff:addr, in the bytes' order. */
static __always_inline __u64 mapped_low(__u32 addr)
{
	return (__u64)bpf_htonl(0xffff) | ((__u64)addr << 32);
}

/* x * 256 mod 0xffff: a part summed from an even offset, placed at an odd one */
static __always_inline __u32 rot8(__u32 x)
{
	return ((x << 8) | (x >> 8)) & 0xffff;
}

static __always_inline __u16 fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

SEC("tc")
int kernel_cache(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct kc_addr src = {}, dst = {};
	__u32 l3, dns_len;

	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	/* Each family read at its own constant offsets: a packet pointer moved
	 * by a variable is refused without CAP_PERFMON (see kc_scratch). */
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + L2;
		struct udphdr *udp = data + L2 + L3;

		if ((void *)(udp + 1) > end)
			return TC_ACT_OK;
		if (ip->ihl != 5 || ip->version != 4 || ip->protocol != IPPROTO_UDP ||
		    (ip->frag_off & bpf_htons(0x3fff)) || udp->dest != bpf_htons(53))
			return TC_ACT_OK;
		__u32 ip_len = bpf_ntohs(ip->tot_len);
		dns_len = bpf_ntohs(udp->len);
		if (dns_len < L4 + 17 || dns_len + L3 != ip_len || ip_len + L2 > skb->len)
			return count(KC_NOT_PLAIN, TC_ACT_OK);
		if (!answers_as(ip->daddr))
			return TC_ACT_OK;
		src.d[1] = mapped_low(ip->saddr);
		dst.d[1] = mapped_low(ip->daddr);
		l3 = L3;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + L2;
		struct udphdr *udp = data + L2 + L3_6;

		if ((void *)(udp + 1) > end)
			return TC_ACT_OK;
		if (ip6->version != 6 || ip6->nexthdr != IPPROTO_UDP || udp->dest != bpf_htons(53))
			return TC_ACT_OK;
		__u32 payload = bpf_ntohs(ip6->payload_len);
		dns_len = bpf_ntohs(udp->len);
		if (dns_len < L4 + 17 || dns_len != payload || payload + L3_6 + L2 > skb->len)
			return count(KC_NOT_PLAIN, TC_ACT_OK);
		src.d[0] = *(__u64 *)&ip6->saddr;
		src.d[1] = *(__u64 *)((__u8 *)&ip6->saddr + 8);
		dst.d[0] = *(__u64 *)&ip6->daddr;
		dst.d[1] = *(__u64 *)((__u8 *)&ip6->daddr + 8);
		if (!answers_as6(dst.d))
			return TC_ACT_OK;
		l3 = L3_6;
	} else {
		return TC_ACT_OK;
	}
	dns_len -= L4;
	__u32 dns_at = L2 + l3 + L4;
	__u8 dns[12];
	if (bpf_skb_load_bytes(skb, dns_at, dns, sizeof(dns)))
		return TC_ACT_OK;

	__u16 qflags = ((__u16)dns[2] << 8) | dns[3];
	if ((qflags & (DNS_QR | DNS_OPCODE | DNS_TC)) || dns[4] || dns[5] != 1 ||
	    dns[6] || dns[7] || dns[8] || dns[9] || dns[10] || dns[11] > 1)
		return count(KC_NOT_PLAIN, TC_ACT_OK);
	int edns = dns[11] != 0;

	struct kc_client *client = bpf_map_lookup_elem(&kc_clients, &src);
	__u64 now = bpf_ktime_get_ns();
	if (!client || client->expires_ns <= now || !writer_current(client->writer, client->gen))
		return count(KC_NO_CLIENT, TC_ACT_OK);

	__u32 zero = 0;
	struct kc_scratch *scratch = bpf_map_lookup_elem(&kc_scratch, &zero);
	if (!scratch)
		return TC_ACT_OK;
	struct kc_key *key = &scratch->key;
	__u8 *raw = scratch->raw;
	__builtin_memset(key, 0, sizeof(*key));
	key->group = client->group;
	__u64 raw_len = dns_len - 12;
	asm volatile("" : "+r"(raw_len));
	if (raw_len < 5 || raw_len > KC_RAW)
		return count(KC_NOT_PLAIN, TC_ACT_OK);
	__u64 n_raw = raw_len;
	KC_BOUND(n_raw, 5, KC_RAW);
	if (bpf_skb_load_bytes(skb, dns_at + 12, raw, n_raw))
		return count(KC_NOT_PLAIN, TC_ACT_OK);

	/* The name, byte by byte: a length byte (1-63; a pointer or a reserved
	 * type sends the query up), then that many bytes, lower-cased. */
	__u32 label_left = 0, name_len = 0;
	__u64 qsum = 0;   /* the question as sent, for the answer's checksum */
#pragma unroll
	for (int i = 0; i < KC_NAME_MAX; i++) {
		if (i >= raw_len)
			return count(KC_NOT_PLAIN, TC_ACT_OK);
		__u8 b = raw[i];
		qsum += (i & 1) ? b : (__u32)b << 8;
		if (label_left) {
			if (b >= 'A' && b <= 'Z')
				b += 'a' - 'A';
			label_left--;
		} else if (b == 0) {
			name_len = i + 1;
			break;
		} else if (b > 63) {
			return count(KC_NOT_PLAIN, TC_ACT_OK);
		} else {
			label_left = b;
		}
		key->name[i] = b;
	}
	if (!name_len || name_len > KC_NAME_MAX)
		return count(KC_NOT_PLAIN, TC_ACT_OK);
	__u32 qlen = name_len + 4;
	if (edns) {
		if (qlen + OPT_LEN != raw_len)
			return count(KC_NOT_PLAIN, TC_ACT_OK);
	} else if (qlen != raw_len) {
		return count(KC_NOT_PLAIN, TC_ACT_OK);
	}
	/* after the name: read at a variable offset by the helper (see kc_scratch) */
	/* zeroed: 6.1 without CAP_PERFMON may not read stack a helper might not have written */
	__u8 q[4 + OPT_LEN] = {};
	if (bpf_skb_load_bytes(skb, dns_at + 12 + name_len, q, edns ? sizeof(q) : 4))
		return count(KC_NOT_PLAIN, TC_ACT_OK);
	key->qtype = ((__u16)q[0] << 8) | q[1];
	key->qclass = ((__u16)q[2] << 8) | q[3];
	__u32 tail = fold((__u32)key->qtype + key->qclass);
	qsum += (name_len & 1) ? rot8(tail) : tail;
	__u32 client_size = 512;
	if (edns) {
		__u8 *o = q + 4;
		/* root owner, type OPT, extended RCODE 0, version 0, no DO, no options */
		if (o[0] || o[1] || o[2] != 41 || o[5] || o[6] || o[7] || o[8] || o[9] || o[10])
			return count(KC_NOT_PLAIN, TC_ACT_OK);
		client_size = ((__u32)o[3] << 8) | o[4];
		if (client_size < 512)
			client_size = 512;
	}

	struct kc_answer *a = bpf_map_lookup_elem(&kc_answers, key);
	if (!a || !writer_current(a->writer, a->gen))
		return count(KC_MISSES, TC_ACT_OK);
	if (a->expires_ns <= now)
		return count(KC_EXPIRED, TC_ACT_OK);
	__u32 body_len = a->body_len;
	__u32 copy = body_len + (edns ? OPT_LEN : 0);
	__u32 limit = edns ? (client_size < a->edns_max ? client_size : a->edns_max) : 512;
	__u32 new_dns = 12 + qlen + copy;
	if (copy == 0 || copy > KC_BODY_MAX || new_dns > limit || new_dns + dns_at > 1500)
		return count(KC_TOO_BIG, TC_ACT_OK);

	__u64 age = (now - a->stored_ns) / 1000000000ULL;
	__u16 rflags = bpf_htons(a->flags | (qflags & DNS_RD));
	__u16 counts[5] = {rflags, bpf_htons(1), bpf_htons(a->an), bpf_htons(a->ns),
			   bpf_htons(a->ar + (edns ? 1 : 0))};
	__u32 ttl_count = a->ttl_count;
	__u32 an = a->an, ns = a->ns, ar_out = a->ar + (edns ? 1 : 0);
	__u64 body_sum = a->sum_plain, with_opt = a->sum_edns;
	asm volatile("" : "+r"(with_opt));
	if (edns)
		body_sum = with_opt;
	__u64 ttl_sum = 0;
	__u32 qid = ((__u32)dns[0] << 8) | dns[1];

	/* From here on the query is the answer: the frame grows to its size. */
	if (bpf_skb_change_tail(skb, dns_at + new_dns, 0))
		return TC_ACT_OK;
	__u32 at = dns_at + 12 + qlen;
	/* checked again where the verifier needs it (clang may keep an unchecked copy) */
	__u64 n = copy;
	asm volatile("" : "+r"(n));
	if (n == 0 || n > KC_BODY_MAX)
		return TC_ACT_SHOT;
	KC_BOUND(n, 1, KC_BODY_MAX);
	if (bpf_skb_store_bytes(skb, at, a->body, n, 0))
		return TC_ACT_SHOT;
	/* Unrolled: each entry at a constant offset.  As a loop, Debian 6.1's
	 * verifier without CAP_PERFMON walked clang's pointer through the arrays
	 * past the value's end, or past 64 iterations, and refused the program. */
#pragma clang loop unroll(full)
	for (int i = 0; i < KC_TTLS; i++) {
		/* no break: with one, clang sees a runtime trip count and keeps the loop */
		if (i < ttl_count) {
			__u32 ttl = a->ttl[i];
			__u32 v = ttl > age ? ttl - (__u32)age : 0;
			__u32 left = bpf_htonl(v);
			__u32 off = a->ttl_off[i];
			if (bpf_skb_store_bytes(skb, at + off, &left, 4, 0))
				return TC_ACT_SHOT;
			__u32 part = fold((v >> 16) + (v & 0xffff));
			ttl_sum += ((qlen + off) & 1) ? rot8(part) : part;
		}
	}
	if (bpf_skb_store_bytes(skb, dns_at + 2, counts, sizeof(counts), 0))
		return TC_ACT_SHOT;
	if (bpf_skb_pull_data(skb, dns_at + new_dns))
		return TC_ACT_SHOT;

	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	eth = data;
	struct udphdr *udp;
	if (l3 == L3_6) {
		struct ipv6hdr *ip6 = data + L2;

		udp = data + L2 + L3_6;
		if ((void *)(udp + 1) > end)
			return TC_ACT_SHOT;
		/* version 6, traffic class and flow label 0, as from a new socket */
		*(__u32 *)ip6 = bpf_htonl(0x60000000);
		ip6->payload_len = bpf_htons(L4 + new_dns);
		ip6->hop_limit = 64;
		*(__u64 *)&ip6->saddr = dst.d[0];
		*(__u64 *)((__u8 *)&ip6->saddr + 8) = dst.d[1];
		*(__u64 *)&ip6->daddr = src.d[0];
		*(__u64 *)((__u8 *)&ip6->daddr + 8) = src.d[1];
	} else {
		struct iphdr *ip = data + L2;

		udp = data + L2 + L3;
		if ((void *)(udp + 1) > end)
			return TC_ACT_SHOT;
		ip->daddr = (__u32)(src.d[1] >> 32);
		ip->saddr = (__u32)(dst.d[1] >> 32);
		ip->tot_len = bpf_htons(L3 + L4 + new_dns);
		ip->id = 0;
		ip->frag_off = bpf_htons(0x4000);   /* DF, as Linux sends a UDP answer */
		ip->ttl = 64;
		ip->tos = 0;
		ip->check = 0;
		__u64 isum = 0;
		__u16 *w = (__u16 *)ip;
#pragma unroll
		for (int i = 0; i < L3 / 2; i++)
			isum += w[i];
		ip->check = ~fold(isum);
	}
	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);

	__u16 sport = udp->source;
	udp->source = udp->dest;
	udp->dest = sport;
	udp->len = bpf_htons(L4 + new_dns);
	/* The UDP checksum from its parts, in big-endian words: the pseudo
	 * header (the same sum for either family: addresses, protocol, length)
	 * and UDP header, the DNS header, the question (summed while it was
	 * read), the stored records and OPT (TTLs at zero, summed by the
	 * server), the TTLs as sent.  Bytes at an odd offset count as their
	 * word's low half: a part that starts there counts rotated by 8 bits. */
	__u64 sum = qsum;
	sum += addr_sum(&src) + addr_sum(&dst) + IPPROTO_UDP +
	       2 * (L4 + new_dns) + bpf_ntohs(udp->source) + bpf_ntohs(udp->dest);
	if (l3 == L3)
		sum -= 2 * 0xffff;   /* the mapped prefix's ffff words are no part of IPv4's */
	sum += qid + bpf_ntohs(rflags) + 1 + an + ns + ar_out;
	__u32 odd = qlen & 1;
	__u64 records = fold(body_sum);
	sum += odd ? rot8(records) : records;
	sum += ttl_sum;
	udp->check = 0;
	__u16 check = ~fold(sum);
	udp->check = bpf_htons(check ? check : 0xffff);

	__u64 *hits = bpf_map_lookup_elem(&kc_client_hits, &src);
	if (hits) {
		*hits += 1;
	} else {
		__u64 one = 1;
		bpf_map_update_elem(&kc_client_hits, &src, &one, BPF_NOEXIST);
	}
	hits = bpf_map_lookup_elem(&kc_name_hits, key);
	if (hits) {
		*hits += 1;
	} else {
		__u64 one = 1;
		bpf_map_update_elem(&kc_name_hits, key, &one, BPF_NOEXIST);
	}
	count(KC_HITS, 0);
	struct kc_config *c = bpf_map_lookup_elem(&kc_config, &zero);
	if (c && c->peer)
		return bpf_redirect_peer(skb->ifindex, 0);
	return bpf_redirect(skb->ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
