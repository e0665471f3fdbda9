//! Reference tables that go with the generated e-commerce events (`weir generate` writes them
//! next to the events): one row per user (segment, signup country) and per product (category,
//! brand), derived from the same seeds as the events, so every `user_id` and `product_id` an
//! event carries has its row, and a user's signup country is the country its events come from.

use std::io::Write;

use super::ecommerce::{home_country, product_category, splitmix, EcommerceConfig};

/// `users.csv`: `user_id,segment,signup_country`.
pub fn write_users_csv(config: &EcommerceConfig, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "user_id,segment,signup_country")?;
    for user in 0..config.users {
        let segment = match splitmix(user ^ 0x5e9) % 100 {
            0..=4 => "vip",
            5..=59 => "regular",
            _ => "new",
        };
        writeln!(out, "u{user:06},{segment},{}", home_country(user))?;
    }
    Ok(())
}

/// `products.csv`: `product_id,category,brand`.
pub fn write_products_csv(config: &EcommerceConfig, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "product_id,category,brand")?;
    for product in 0..config.products {
        let brand = splitmix(product ^ 0xb2a) % 120;
        writeln!(
            out,
            "p{product:05},{},brand-{brand:03}",
            product_category(product)
        )?;
    }
    Ok(())
}
