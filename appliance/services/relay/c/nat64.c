/* The relay's kernel fast path for IPv6 clients: TCP to a fake IPv6 address
 * translated to IPv4 (RFC 7915 header translation, addresses from explicit
 * maps as in SIIT-EAM), so the IPv4 fast path's nftables DNAT, masquerade
 * and conntrack carry it.
 *
 * vproxy has no IPv6 address the modem routes (the box stays invisible on
 * IPv6), and nftables cannot NAT between the families, so a fake IPv6
 * address cannot be DNATed to a real IPv6 one.  Instead:
 *
 *   tc ingress of vproxy0: IPv6 TCP from a client with a shadow address
 *     (n64_clients) to the twin of a fake IPv4 address the relay has mapped
 *     (n64_fakes) becomes IPv4 from the shadow address to the fake IPv4
 *     address: the relay table's DNAT (fake -> real), masquerade and ct mark
 *     take it from there.
 *   tc egress of vproxy0: IPv4 to a shadow address (a reply, its source
 *     un-DNATed back to the fake IPv4 address) becomes IPv6 from the fake
 *     address's twin to the client, to the client's MAC (learnt at
 *     ingress).  What cannot be translated there is dropped: an IPv4 frame
 *     to a shadow address must never reach the home.
 *
 * A connection is translated from its SYN on (n64_flows, per client
 * address and port and fake address and port): one the relay took before
 * the address was mapped keeps going to the relay, and one translated keeps
 * being translated after the relay unmaps the address (its conntrack entry
 * keeps the NAT binding, as an IPv4 client's does).  A SYN not translated
 * forgets its tuple, so a reused port never inherits an old decision.
 *
 * Everything else goes on untouched (TC_ACT_UNSPEC: the next program, such
 * as the DNS kernel cache, still sees it).  The shadow addresses are the
 * relay's (nat64.py): one IPv4 address per IPv6 client, from a range only
 * vproxy uses.  The twin of fake IPv4 address net4 + k is fake6 prefix + k
 * (the DNS server's one pool: fakeip.twin6), with the prefix at most /96.
 *
 * The headers and keys are built in a per-CPU scratch map (n64_scratch),
 * not on the stack: Debian's 6.1 verifier, without CAP_PERFMON (the relay
 * has CAP_BPF and CAP_NET_ADMIN only), refuses a store smaller than 8 bytes
 * into a stack slot it holds a spilled value for ("attempt to corrupt
 * spilled pointer on stack"), which field-by-field headers do all the time.
 * The few stack values left are whole 8-byte words.
 *
 * Checksums: the IPv4 header's is computed; the TCP checksum is adjusted
 * for the pseudo-header's addresses only (its length and protocol words sum
 * the same in both families), which bpf_l4_csum_replace does for
 * CHECKSUM_PARTIAL skbs too.  GSO TCP is converted by bpf_skb_change_proto.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define L2 14
#define IP4_LEN 20
#define IP6_LEN 40
#define TCP_CHECK 16   /* the checksum's offset in the TCP header */
#define IP_DF 0x4000
#define IP_MF_OFFSET 0x3FFF

struct n64_config {
	__u32 on;
	__u32 net4;        /* the fake IPv4 range (host order) and its size */
	__u32 size4;
	__u32 shadow_net;  /* the shadow range (host order) */
	__u32 shadow_mask;
	__u32 prefix6[3];  /* the fake IPv6 range's first 96 bits (network order) */
};

struct n64_client {
	__u32 shadow;      /* network order */
	__u32 pad;
};

struct n64_shadow {
	__u32 client6[4];
	__u8 mac[6];
	__u8 pad[2];
};

struct n64_flow {
	__u32 client6[4];
	__u32 fake6_low;   /* the fake address's last 32 bits */
	__u16 sport;
	__u16 dport;
};

struct n64_scratch {
	struct n64_flow flow;
	__u32 fake4;
	__u32 now[2];
	__u32 old[8];
	struct iphdr ip4;
	struct ipv6hdr ip6;
	__u8 mac[6];
	__be16 proto;
	__u8 one;
	__u8 pad[7];
};

enum { ST_TO4, ST_TO6, ST_NOT_MAPPED, ST_NO_SHADOW, ST_DROPPED, ST_FAILED, ST_NOT_OURS, ST_N };

#define TCP_SYN 0x02
#define TCP_ACK 0x10

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct n64_config);
} n64_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);       /* fake IPv4 address, network order */
	__type(value, __u32);     /* its real IPv4 address (for the record) */
} n64_fakes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32[4]);    /* the client's IPv6 address */
	__type(value, struct n64_client);
} n64_clients SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);       /* shadow address, network order */
	__type(value, struct n64_shadow);
} n64_shadows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct n64_flow);
	__type(value, __u8);
} n64_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct n64_scratch);
} n64_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ST_N);
	__type(key, __u32);
	__type(value, __u64);
} n64_stats SEC(".maps");

static __always_inline void count(__u64 what)
{
	__u64 *n = bpf_map_lookup_elem(&n64_stats, &what);  /* the key: its first 4 bytes */

	if (n)
		*n += 1;
}

static __always_inline __u16 fold(__s64 sum)
{
	__u32 s = (__u32)sum;

	s = (s & 0xFFFF) + (s >> 16);
	s = (s & 0xFFFF) + (s >> 16);
	return (__u16)~s;
}

SEC("tc")
int nat64_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = data + L2;
	struct n64_config *cfg;
	struct n64_client *client;
	struct n64_shadow *shadow;
	struct n64_scratch *s;
	struct iphdr *ip4;
	__u64 zero = 0;
	__u32 offset;
	__u8 flags;
	__s64 diff;

	if (data + L2 + IP6_LEN + 20 > end)
		return TC_ACT_UNSPEC;
	if (eth->h_proto != bpf_htons(ETH_P_IPV6) || ip6->nexthdr != IPPROTO_TCP)
		return TC_ACT_UNSPEC;
	cfg = bpf_map_lookup_elem(&n64_config, &zero);
	if (!cfg || !cfg->on)
		return TC_ACT_UNSPEC;
	if (ip6->daddr.in6_u.u6_addr32[0] != cfg->prefix6[0] ||
	    ip6->daddr.in6_u.u6_addr32[1] != cfg->prefix6[1] ||
	    ip6->daddr.in6_u.u6_addr32[2] != cfg->prefix6[2])
		return TC_ACT_UNSPEC;
	offset = bpf_ntohl(ip6->daddr.in6_u.u6_addr32[3]);
	if (offset >= cfg->size4)
		return TC_ACT_UNSPEC;
	s = bpf_map_lookup_elem(&n64_scratch, &zero);
	if (!s)
		return TC_ACT_UNSPEC;
	s->fake4 = bpf_htonl(cfg->net4 + offset);
	__builtin_memcpy(s->flow.client6, &ip6->saddr, 16);
	s->flow.fake6_low = ip6->daddr.in6_u.u6_addr32[3];
	__builtin_memcpy(&s->flow.sport, data + L2 + IP6_LEN, 4);  /* both ports */
	flags = *(__u8 *)(data + L2 + IP6_LEN + 13);
	if ((flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		if (!bpf_map_lookup_elem(&n64_fakes, &s->fake4)) {
			/* The relay takes it (and maps the address, for a direct route). */
			bpf_map_delete_elem(&n64_flows, &s->flow);
			count(ST_NOT_MAPPED);
			return TC_ACT_UNSPEC;
		}
	} else if (!bpf_map_lookup_elem(&n64_flows, &s->flow)) {
		count(ST_NOT_OURS);  /* a connection the relay holds */
		return TC_ACT_UNSPEC;
	}
	client = bpf_map_lookup_elem(&n64_clients, &ip6->saddr);
	if (!client) {
		count(ST_NO_SHADOW);
		return TC_ACT_UNSPEC;
	}
	if (ip6->hop_limit <= 1)
		return TC_ACT_UNSPEC;  /* the IPv6 stack says time exceeded */
	shadow = bpf_map_lookup_elem(&n64_shadows, &client->shadow);
	if (!shadow || shadow->client6[0] != ip6->saddr.in6_u.u6_addr32[0] ||
	    shadow->client6[1] != ip6->saddr.in6_u.u6_addr32[1] ||
	    shadow->client6[2] != ip6->saddr.in6_u.u6_addr32[2] ||
	    shadow->client6[3] != ip6->saddr.in6_u.u6_addr32[3]) {
		count(ST_NO_SHADOW);  /* half-written by the relay: not yet */
		return TC_ACT_UNSPEC;
	}
	/* The replies go to the MAC the client sends from. */
	__builtin_memcpy(shadow->mac, eth->h_source, 6);
	if ((flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		s->one = 1;
		bpf_map_update_elem(&n64_flows, &s->flow, &s->one, BPF_ANY);
	}

	ip4 = &s->ip4;
	ip4->version = 4;
	ip4->ihl = 5;
	ip4->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
	ip4->tot_len = bpf_htons(bpf_ntohs(ip6->payload_len) + IP4_LEN);
	ip4->id = 0;
	ip4->frag_off = bpf_htons(IP_DF);
	ip4->ttl = ip6->hop_limit;
	ip4->protocol = IPPROTO_TCP;
	ip4->check = 0;
	ip4->saddr = client->shadow;
	ip4->daddr = s->fake4;
	ip4->check = fold(bpf_csum_diff(0, 0, (__be32 *)ip4, IP4_LEN, 0));

	__builtin_memcpy(s->old, &ip6->saddr, 32);
	s->now[0] = ip4->saddr;
	s->now[1] = ip4->daddr;
	diff = bpf_csum_diff(s->old, 32, s->now, 8, 0);

	if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IP), 0)) {
		count(ST_FAILED);
		return TC_ACT_UNSPEC;  /* unchanged: the relay takes it */
	}
	s->proto = bpf_htons(ETH_P_IP);
	if (bpf_skb_store_bytes(skb, L2, ip4, IP4_LEN, BPF_F_RECOMPUTE_CSUM) ||
	    bpf_skb_store_bytes(skb, 12, &s->proto, 2, 0) ||
	    bpf_l4_csum_replace(skb, L2 + IP4_LEN + TCP_CHECK, 0, diff, BPF_F_PSEUDO_HDR)) {
		count(ST_FAILED);
		return TC_ACT_SHOT;  /* half translated: nothing sane to pass on */
	}
	count(ST_TO4);
	return TC_ACT_OK;
}

SEC("tc")
int nat64_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip4 = data + L2;
	struct n64_config *cfg;
	struct n64_shadow *shadow;
	struct n64_scratch *s;
	struct ipv6hdr *ip6;
	__u64 zero = 0;
	__u32 offset;
	__s64 diff;

	if (data + L2 + IP4_LEN > end)
		return TC_ACT_UNSPEC;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;
	cfg = bpf_map_lookup_elem(&n64_config, &zero);
	if (!cfg || !cfg->on)
		return TC_ACT_UNSPEC;
	if ((bpf_ntohl(ip4->daddr) & cfg->shadow_mask) != cfg->shadow_net)
		return TC_ACT_UNSPEC;
	/* To a shadow address: IPv6 to its client, or nothing. */
	if (ip4->ihl != 5 || ip4->protocol != IPPROTO_TCP ||
	    (bpf_ntohs(ip4->frag_off) & IP_MF_OFFSET) || data + L2 + IP4_LEN + 20 > end)
		goto drop;
	offset = bpf_ntohl(ip4->saddr) - cfg->net4;
	if (offset >= cfg->size4)
		goto drop;
	shadow = bpf_map_lookup_elem(&n64_shadows, &ip4->daddr);
	if (!shadow)
		goto drop;
	s = bpf_map_lookup_elem(&n64_scratch, &zero);
	if (!s)
		goto drop;

	ip6 = &s->ip6;
	__builtin_memset(ip6, 0, IP6_LEN);
	ip6->version = 6;
	ip6->priority = ip4->tos >> 4;
	ip6->flow_lbl[0] = (ip4->tos & 0xF) << 4;
	ip6->payload_len = bpf_htons(bpf_ntohs(ip4->tot_len) - IP4_LEN);
	ip6->nexthdr = IPPROTO_TCP;
	ip6->hop_limit = ip4->ttl;
	ip6->saddr.in6_u.u6_addr32[0] = cfg->prefix6[0];
	ip6->saddr.in6_u.u6_addr32[1] = cfg->prefix6[1];
	ip6->saddr.in6_u.u6_addr32[2] = cfg->prefix6[2];
	ip6->saddr.in6_u.u6_addr32[3] = bpf_htonl(offset);
	__builtin_memcpy(&ip6->daddr, shadow->client6, 16);
	__builtin_memcpy(s->mac, shadow->mac, 6);

	s->now[0] = ip4->saddr;
	s->now[1] = ip4->daddr;
	diff = bpf_csum_diff(s->now, 8, (__be32 *)&ip6->saddr, 32, 0);

	if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IPV6), 0))
		goto failed;
	s->proto = bpf_htons(ETH_P_IPV6);
	if (bpf_skb_store_bytes(skb, L2, ip6, IP6_LEN, BPF_F_RECOMPUTE_CSUM) ||
	    bpf_skb_store_bytes(skb, 0, s->mac, 6, 0) ||
	    bpf_skb_store_bytes(skb, 12, &s->proto, 2, 0) ||
	    bpf_l4_csum_replace(skb, L2 + IP6_LEN + TCP_CHECK, 0, diff, BPF_F_PSEUDO_HDR))
		goto failed;
	count(ST_TO6);
	return TC_ACT_OK;
failed:
	count(ST_FAILED);
	return TC_ACT_SHOT;
drop:
	count(ST_DROPPED);
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "GPL";
