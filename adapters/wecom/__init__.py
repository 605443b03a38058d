"""WeCom (企业微信): callback crypto, customer contact, 微信客服 and a capability-aware delivery."""
